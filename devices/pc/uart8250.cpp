#include "devices/pc/uart8250.h"

#include <algorithm>

#include "common/state_check.h"

namespace keel {

namespace {
// Register offsets and bits of the 16550A.
constexpr uint16_t kData = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;
constexpr uint8_t kIerRxAvailable = 0x01, kIerThrEmpty = 0x02, kIerLineStatus = 0x04;
constexpr uint8_t kIirNone = 0x01, kIirThrEmpty = 0x02, kIirRxAvailable = 0x04;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirFifoEnabled = 0xc0;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrDataReady = 0x01, kLsrOverrun = 0x02, kLsrBreak = 0x10;
constexpr uint8_t kLsrThrEmpty = 0x20, kLsrTxIdle = 0x40;
constexpr uint8_t kMcrRts = 0x02, kMcrOut2 = 0x08, kMcrLoop = 0x10;
// With the loopback bit set, MSR reflects MCR's outputs (DTR->DSR, RTS->CTS,
// OUT1->RI, OUT2->DCD); otherwise the line is up: DCD, DSR, CTS.
constexpr uint8_t kMsrConnected = 0xb0;
}  // namespace

void Uart8250::pio_read(uint16_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (data.size() != 1 || offset > kScr) return;
  data[0] = read_register(offset);
}

void Uart8250::pio_write(uint16_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1 || offset > kScr) return;
  write_register(offset, data[0]);
}

void Uart8250::queue_input(std::span<const uint8_t> bytes) {
  bool was = interrupt_pending();
  for (uint8_t b : bytes) receive(b);
  update_interrupt(was);
}

size_t Uart8250::input_room() const {
  if ((mcr_ & (kMcrRts | kMcrLoop)) != kMcrRts) return 0;
  return kFifoSize - rx_.size();
}

size_t Uart8250::offer_input(std::span<const uint8_t> bytes) {
  const size_t taken = std::min(bytes.size(), input_room());
  queue_input(bytes.first(taken));
  return taken;
}

bool Uart8250::offer_break() {
  if (input_room() == 0) return false;
  bool was = interrupt_pending();
  rx_break_ |= 1u << rx_.size();
  rx_.push_back(0);
  update_interrupt(was);
  return true;
}

void Uart8250::receive(uint8_t byte) {
  if (rx_.size() >= kFifoSize) {
    overrun_ = true;
    return;
  }
  rx_.push_back(byte);
}

// 16550A priorities: line status, received data, transmitter empty.
uint8_t Uart8250::interrupt_identification() const {
  if ((ier_ & kIerLineStatus) && (overrun_ || (rx_break_ & 1))) return kIirLineStatus;
  if ((ier_ & kIerRxAvailable) && !rx_.empty()) return kIirRxAvailable;
  if ((ier_ & kIerThrEmpty) && thre_pending_) return kIirThrEmpty;
  return kIirNone;
}

void Uart8250::update_interrupt(bool was_pending) {
  // The line is edge-triggered: pulse it when an interrupt becomes pending.
  // On PCs the UART's OUT2 output gates its interrupt line (drivers set it).
  if (!was_pending && interrupt_pending() && (mcr_ & kMcrOut2) && irq_) irq_();
}

uint8_t Uart8250::read_register(uint16_t offset) {
  bool was = interrupt_pending();
  uint8_t value = 0;
  switch (offset) {
    case kData:
      if (lcr_ & kLcrDlab) return dll_;
      if (!rx_.empty()) {
        value = rx_.front();
        rx_.pop_front();
        rx_break_ >>= 1;
        if (rx_.empty() && room_) room_();
      }
      break;
    case kIer:
      return (lcr_ & kLcrDlab) ? dlm_ : ier_;
    case kIir:
      value = interrupt_identification() | kIirFifoEnabled;
      // Reading IIR while it reports THRE acknowledges that interrupt.
      if ((value & 0x0f) == kIirThrEmpty) thre_pending_ = false;
      break;
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr:
      value = kLsrThrEmpty | kLsrTxIdle | (rx_.empty() ? 0 : kLsrDataReady) |
              (overrun_ ? kLsrOverrun : 0) | ((rx_break_ & 1) ? kLsrBreak : 0);
      // Reading LSR clears its error bits (the break stays a NUL in the
      // FIFO) and with them the line status interrupt.
      overrun_ = false;
      rx_break_ &= ~1u;
      break;
    case kMsr:
      if (mcr_ & kMcrLoop) {
        return static_cast<uint8_t>(((mcr_ & 0x01) << 5) | ((mcr_ & 0x02) << 3) |
                                    ((mcr_ & 0x04) << 4) | ((mcr_ & 0x08) << 4));
      }
      return kMsrConnected;
    case kScr:
      return scr_;
  }
  update_interrupt(was);
  return value;
}

void Uart8250::write_register(uint16_t offset, uint8_t value) {
  bool was = interrupt_pending();
  switch (offset) {
    case kData:
      if (lcr_ & kLcrDlab) {
        dll_ = value;
        return;
      }
      if (mcr_ & kMcrLoop) {
        receive(value);
      } else if (sink_) {
        sink_(value);
      }
      // Transmission is instant: the holding register is empty again at
      // once, which is a new THRE interrupt.
      thre_pending_ = true;
      was = was && (interrupt_identification() != kIirThrEmpty);
      break;
    case kIer:
      if (lcr_ & kLcrDlab) {
        dlm_ = value;
        return;
      }
      // Enabling THRE while the register is empty raises the interrupt.
      if (!(ier_ & kIerThrEmpty) && (value & kIerThrEmpty)) thre_pending_ = true;
      ier_ = value & 0x0f;
      break;
    case kIir:  // FCR: FIFO control; FIFOs are always on, clear requests honoured.
      if (value & 0x02) {
        rx_.clear();
        rx_break_ = 0;
        if (room_) room_();
      }
      break;
    case kLcr:
      lcr_ = value;
      return;
    case kMcr: {
      const size_t room = input_room();
      mcr_ = value & 0x1f;
      if (room == 0 && input_room() > 0 && room_) room_();  // RTS up: send on
      return;
    }
    case kScr:
      scr_ = value;
      return;
    default:
      return;
  }
  update_interrupt(was);
}

state::v1::UartState Uart8250::save() const {
  state::v1::UartState s;
  s.set_ier(ier_);
  s.set_lcr(lcr_);
  s.set_mcr(mcr_);
  s.set_scr(scr_);
  s.set_dll(dll_);
  s.set_dlm(dlm_);
  s.set_thre_pending(thre_pending_);
  s.set_overrun(overrun_);
  s.set_rx_fifo(std::string(rx_.begin(), rx_.end()));
  s.set_rx_break(rx_break_);
  return s;
}

void Uart8250::restore(const state::v1::UartState& s) {
  const std::string name = "uart";
  const auto ier = state_field<uint8_t>(s.ier(), name, "ier");
  const auto mcr = state_field<uint8_t>(s.mcr(), name, "mcr");
  if (ier & ~0x0f) refuse_state(name, "ier", "has reserved bits set");
  if (mcr & ~0x1f) refuse_state(name, "mcr", "has reserved bits set");
  if (s.rx_fifo().size() > kFifoSize) {
    refuse_state(name, "rx_fifo",
                 "holds " + std::to_string(s.rx_fifo().size()) + " bytes, more than 16");
  }
  if (s.rx_break() >> s.rx_fifo().size() != 0)
    refuse_state(name, "rx_break", "marks bytes the receive FIFO does not hold");
  const auto lcr = state_field<uint8_t>(s.lcr(), name, "lcr");
  const auto scr = state_field<uint8_t>(s.scr(), name, "scr");
  const auto dll = state_field<uint8_t>(s.dll(), name, "dll");
  const auto dlm = state_field<uint8_t>(s.dlm(), name, "dlm");
  ier_ = ier;
  mcr_ = mcr;
  lcr_ = lcr;
  scr_ = scr;
  dll_ = dll;
  dlm_ = dlm;
  thre_pending_ = s.thre_pending();
  overrun_ = s.overrun();
  rx_.assign(s.rx_fifo().begin(), s.rx_fifo().end());
  rx_break_ = s.rx_break();
}

}  // namespace keel
