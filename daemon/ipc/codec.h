// The compact binary encoding of the messages between the supervisor and the
// data plane (daemon/ipc/messages.h): little-endian fixed-width integers,
// strings and lists prefixed by a u32 count. Both ends are the same build of
// the same program, so there is no schema negotiation beyond the protocol
// version in Hello; what is checked is that a message is well formed, so that
// a data plane that an agent has taken over cannot make the supervisor read
// out of bounds or allocate without limit (tests/fuzz/ipc_fuzz.cpp).
#pragma once

#include "common/error.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tameflare::ipc {

// A message that is not well formed: where it went wrong.
class DecodeError : public Error {
public:
    DecodeError(const std::string& what, std::size_t offset)
        : Error(what + " at byte " + std::to_string(offset),
                "the supervisor and the data plane are the same build; a malformed message means the peer is "
                "broken or hostile, and the channel is closed"),
          offset_(offset) {}
    [[nodiscard]] std::size_t offset() const noexcept { return offset_; }

private:
    std::size_t offset_;
};

class Writer {
public:
    void u8(std::uint8_t value) { out_.push_back(static_cast<char>(value)); }
    void u16(std::uint16_t value) { fixed(value, 2); }
    void u32(std::uint32_t value) { fixed(value, 4); }
    void u64(std::uint64_t value) { fixed(value, 8); }
    void i64(std::int64_t value) { fixed(static_cast<std::uint64_t>(value), 8); }
    void boolean(bool value) { u8(value ? 1 : 0); }
    void text(std::string_view value);
    // A list's length, before its items.
    void count(std::size_t value);

    [[nodiscard]] std::size_t size() const { return out_.size(); }
    [[nodiscard]] const std::string& bytes() const { return out_; }
    std::string take() { return std::move(out_); }

private:
    void fixed(std::uint64_t value, int width);
    std::string out_;
};

class Reader {
public:
    explicit Reader(std::string_view bytes) : in_(bytes) {}

    std::uint8_t u8() { return static_cast<std::uint8_t>(fixed(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(fixed(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(fixed(4)); }
    std::uint64_t u64() { return fixed(8); }
    std::int64_t i64() { return static_cast<std::int64_t>(fixed(8)); }
    bool boolean();
    // A string of at most `max` bytes.
    std::string text(std::size_t max);
    // A list's length: at most `max`, and no more items than bytes left
    // when each takes at least `least` bytes (so a count cannot make the
    // reader reserve what the message does not hold).
    std::size_t count(std::size_t max, std::size_t least = 1);
    // Throws unless every byte was read.
    void finish() const;

    [[nodiscard]] std::size_t offset() const { return offset_; }
    [[nodiscard]] std::size_t left() const { return in_.size() - offset_; }

private:
    std::uint64_t fixed(int width);
    std::string_view in_;
    std::size_t offset_ = 0;
};

}  // namespace tameflare::ipc
