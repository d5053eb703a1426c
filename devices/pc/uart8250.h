// A 16550A-compatible UART (the PC's COM1): transmit to a sink, receive
// from bytes queued by the VMM, THRE and RX interrupts on its IRQ line.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <span>

#include "devices/pc/pio_device.h"
#include "proto/device_state.pb.h"

namespace keel {

class Uart8250 : public PioDevice {
 public:
  using Sink = std::function<void(uint8_t)>;
  // Pulses the UART's interrupt line (edge-triggered ISA IRQ).
  using IrqTrigger = std::function<void()>;

  // Told when the guest empties the receive FIFO or raises RTS (room for
  // more input).
  // Runs with the device's lock held, on a vCPU's thread: it must only
  // hand the news on (post to the event loop), never call back in here.
  using RoomHook = std::function<void()>;

  Uart8250(Sink sink, IrqTrigger irq) : sink_(std::move(sink)), irq_(std::move(irq)) {}
  void set_room_hook(RoomHook hook) { room_ = std::move(hook); }

  void pio_read(uint16_t offset, std::span<uint8_t> data) override;
  void pio_write(uint16_t offset, std::span<const uint8_t> data) override;
  // Bytes for the guest to read (console input). What does not fit in the
  // receive FIFO is dropped, with an overrun reported in LSR, as on hardware.
  void queue_input(std::span<const uint8_t> bytes);
  // Console input paced to the FIFO: takes as many of `bytes` as fit and
  // returns how many; the rest waits for the room hook. Nothing is dropped.
  // Hardware flow control as a modem honours it: nothing while the guest
  // holds RTS low (its driver has not opened the port, or its tty is full
  // and asks to stop: Linux does with `stty crtscts`) or loops back.
  size_t offer_input(std::span<const uint8_t> bytes);
  // A BREAK on the line (16550A): a NUL byte with LSR.BI when it reaches
  // the FIFO's head, and a receiver line status interrupt (IER bit 2).
  // False when the FIFO is full (offer it again with the room hook).
  bool offer_break();
  size_t input_room() const;
  static constexpr size_t kFifoSize = 16;

  // Snapshot (proto/device_state.proto). restore() checks `state` as
  // untrusted input (InputError naming the field; nothing changed then) and
  // raises no interrupt: an edge already sent is in the irqchip's state.
  // Not thread-safe, like the port accesses: the vCPUs are stopped.
  state::v1::UartState save() const;
  void restore(const state::v1::UartState& state);

 private:
  uint8_t read_register(uint16_t offset);
  void write_register(uint16_t offset, uint8_t value);
  uint8_t interrupt_identification() const;
  void update_interrupt(bool was_pending);
  bool interrupt_pending() const { return (interrupt_identification() & 1) == 0; }

  Sink sink_;
  IrqTrigger irq_;
  RoomHook room_;
  std::deque<uint8_t> rx_;
  uint32_t rx_break_ = 0;  // bit i: FIFO entry i (0 = head) came with a BREAK
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0x03;  // 8N1
  uint8_t mcr_ = 0x08;  // OUT2
  uint8_t scr_ = 0;
  uint8_t dll_ = 0x0c;  // 9600 baud
  uint8_t dlm_ = 0;
  bool thre_pending_ = false;
  bool overrun_ = false;  // LSR.OE: set on a dropped byte, cleared by reading LSR
  void receive(uint8_t byte);
};

}  // namespace keel
