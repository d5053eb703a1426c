#include "migration/stream_hello.h"

#include "migration/event_loop_call.h"
#include "proto/migration.pb.h"

namespace keel::migration {

namespace mpb = ::keel::migration::v1;
namespace st = ::keel::state::v1;

void send_hello(FrameChannel& channel, MigratableMachine& machine, bool replica,
                const std::vector<uint64_t>& disk_bytes, uint32_t run_permit_ms) {
  const st::VmState ours =
      on_event_loop<st::VmState>(machine, [&machine] { return machine.shape(); });
  mpb::Hello hello;
  hello.set_protocol_version(kProtocolVersion);
  hello.set_state_schema_version(ours.schema_version());
  *hello.mutable_config() = ours.config();
  *hello.mutable_cpu() = ours.cpu();
  hello.set_page_size(kPageSize);
  hello.set_memory_bytes(machine.guest_memory().size());
  hello.set_replica(replica);
  for (uint64_t bytes : disk_bytes) hello.add_disk_bytes(bytes);
  hello.set_run_permit_ms(run_permit_ms);
  channel.send_magic();
  channel.send(FrameType::kHello, hello);
  mpb::Verdict verdict;
  channel.receive_message(FrameType::kVerdict, verdict);
  if (!verdict.ok()) {
    throw InputError(std::string(replica ? "the passive" : "the destination") +
                     " refused the VM: " + peer_says(verdict.message()));
  }
}

std::unique_ptr<Machine> machine_for_hello(const VmmOptions& options,
                                           std::span<const uint8_t> hello_bytes, bool replica) {
  mpb::Hello hello;
  if (!hello.ParseFromArray(hello_bytes.data(), static_cast<int>(hello_bytes.size())))
    throw StreamError("hello frame does not parse");
  if (hello.protocol_version() != kProtocolVersion) {
    throw InputError("the source speaks migration protocol " +
                     std::to_string(hello.protocol_version()) + ", this keel-vmm " +
                     std::to_string(kProtocolVersion));
  }
  if (hello.replica() != replica) {
    throw InputError(replica ? "this keel-vmm keeps a replica (--replica-of): it takes "
                               "`keelctl replicate`, not a migration"
                             : "this keel-vmm takes a migration (--incoming): a replica "
                               "goes to keel-vmm --replica-of");
  }
  if (hello.page_size() != kPageSize)
    throw InputError("the source's page size is " + std::to_string(hello.page_size()));
  VmmOptions shape = options;
  shape.config =
      config_for_restore(options, hello.config(), replica ? "replicated VM" : "migrating VM");
  auto machine = Machine::shape_only(shape);
  if (hello.memory_bytes() != machine->guest_memory().size()) {
    throw InputError("the source's guest memory is " + std::to_string(hello.memory_bytes()) +
                     " bytes, its configuration makes " +
                     std::to_string(machine->guest_memory().size()));
  }
  st::VmState fit;
  fit.set_schema_version(hello.state_schema_version());
  *fit.mutable_config() = hello.config();
  *fit.mutable_cpu() = hello.cpu();
  machine->check_shape_fits(fit);
  return machine;
}

std::unique_ptr<Machine> answer_hello(
    FrameChannel& channel,
    const std::function<std::unique_ptr<Machine>(std::span<const uint8_t>)>& build) {
  FrameChannel::Frame frame = channel.receive();
  if (frame.type != FrameType::kHello)
    throw StreamError(std::string("expected hello, got ") + frame_name(frame.type));
  std::unique_ptr<Machine> machine;
  try {
    machine = build(frame.payload);
  } catch (const InputError& e) {
    refuse_stream(channel, e.what());
    throw;
  }
  mpb::Verdict yes;
  yes.set_ok(true);
  channel.send(FrameType::kVerdict, yes);
  return machine;
}

void refuse_stream(FrameChannel& channel, const std::string& why) {
  try {
    mpb::Verdict verdict;
    verdict.set_ok(false);
    verdict.set_message(why);
    channel.send(FrameType::kVerdict, verdict);
  } catch (const std::exception&) {
    // The source is gone: it learns nothing, and needs nothing.
  }
}

}  // namespace keel::migration
