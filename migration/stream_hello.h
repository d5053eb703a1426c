// The opening every migration and replica stream shares: the source says
// what the guest sees of the machine (Hello), the destination builds that
// shape with its own disks and taps and answers whether it can run it
// (Verdict), before any memory moves.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "migration/stream/frame_channel.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"

namespace keel::migration {

// Source side, on a connected channel: magic, Hello (the shape taken on the
// machine's event loop), then the destination's Verdict. InputError when it
// refused (its reason quoted), StreamError when the stream broke.
// `disk_bytes`, `run_permit_ms`: a replica stream's (Hello's fields).
void send_hello(FrameChannel& channel, MigratableMachine& machine, bool replica,
                const std::vector<uint64_t>& disk_bytes = {}, uint32_t run_permit_ms = 0);

// Destination side: the machine built from the Hello frame `hello` (its
// configuration with this command line's disks and taps), shape-checked,
// its control socket not opened. `replica` is what this process expects;
// a stream of the other kind is refused. InputError or StreamError naming
// what does not fit.
std::unique_ptr<Machine> machine_for_hello(const VmmOptions& options,
                                           std::span<const uint8_t> hello, bool replica);

// Destination side, after the magic: the Hello frame, the machine `build`
// makes from it, and the answer: yes, or the InputError `build` threw
// (sent to the source as a no, then thrown on here). StreamError when the
// first frame is not a hello.
std::unique_ptr<Machine> answer_hello(
    FrameChannel& channel,
    const std::function<std::unique_ptr<Machine>(std::span<const uint8_t>)>& build);

// Destination side: tells the source no, if it still listens.
void refuse_stream(FrameChannel& channel, const std::string& why);

}  // namespace keel::migration
