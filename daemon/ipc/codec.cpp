#include "daemon/ipc/codec.h"

#include <limits>

namespace tameflare::ipc {

void Writer::fixed(std::uint64_t value, int width) {
    for (int i = 0; i < width; ++i) out_.push_back(static_cast<char>((value >> (8 * i)) & 0xFFU));
}

void Writer::text(std::string_view value) {
    count(value.size());
    out_.append(value);
}

void Writer::count(std::size_t value) {
    if (value > std::numeric_limits<std::uint32_t>::max()) throw std::length_error("a list or string too long to send");
    u32(static_cast<std::uint32_t>(value));
}

std::uint64_t Reader::fixed(int width) {
    if (left() < static_cast<std::size_t>(width)) throw DecodeError("the message ends inside a number", offset_);
    std::uint64_t value = 0;
    for (int i = 0; i < width; ++i) {
        value |= static_cast<std::uint64_t>(static_cast<unsigned char>(in_[offset_ + i])) << (8 * i);
    }
    offset_ += static_cast<std::size_t>(width);
    return value;
}

bool Reader::boolean() {
    const auto at = offset_;
    const auto value = u8();
    if (value > 1) throw DecodeError("a boolean that is neither 0 nor 1", at);
    return value == 1;
}

std::string Reader::text(std::size_t max) {
    const auto at = offset_;
    const auto length = u32();
    if (length > max)
        throw DecodeError("a string of " + std::to_string(length) + " bytes, more than " + std::to_string(max), at);
    if (length > left()) throw DecodeError("a string longer than the message", at);
    std::string out(in_.substr(offset_, length));
    offset_ += length;
    return out;
}

std::size_t Reader::count(std::size_t max, std::size_t least) {
    const auto at = offset_;
    const auto value = u32();
    if (value > max)
        throw DecodeError("a list of " + std::to_string(value) + " items, more than " + std::to_string(max), at);
    if (least != 0 && value > left() / least) throw DecodeError("a list longer than the message", at);
    return value;
}

void Reader::finish() const {
    if (left() != 0) throw DecodeError(std::to_string(left()) + " bytes after the end of the message", offset_);
}

}  // namespace tameflare::ipc
