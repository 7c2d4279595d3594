// The supervisor <-> data plane channel (daemon/ipc): the encoding byte for
// byte, malformed messages refused with where they went wrong, and frames with
// descriptors over a real SOCK_SEQPACKET socket pair, including the ones the
// receiver must refuse (too long, too many descriptors) without losing the
// channel or leaking a descriptor.
#include "daemon/ipc/channel.h"
#include "daemon/ipc/codec.h"
#include "daemon/ipc/messages.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace tameflare::ipc {
namespace {

std::size_t open_fds() {
    std::size_t count = 0;
    DIR* dir = ::opendir("/proc/self/fd");
    while (dir != nullptr && ::readdir(dir) != nullptr) ++count;
    if (dir != nullptr) ::closedir(dir);
    return count;
}

TEST(IpcCodec, IntegersAreLittleEndianAndStringsCarryTheirLength) {
    Writer out;
    out.u8(0xAB);
    out.u16(0x0102);
    out.u32(0x01020304);
    out.u64(0x0102030405060708ULL);
    out.i64(-2);
    out.boolean(true);
    out.text("hi");
    const std::string expected(
        "\xAB\x02\x01\x04\x03\x02\x01\x08\x07\x06\x05\x04\x03\x02\x01"
        "\xFE\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x01\x02\x00\x00\x00hi",
        30);
    EXPECT_EQ(out.bytes(), expected);

    Reader in(expected);
    EXPECT_EQ(in.u8(), 0xAB);
    EXPECT_EQ(in.u16(), 0x0102);
    EXPECT_EQ(in.u32(), 0x01020304u);
    EXPECT_EQ(in.u64(), 0x0102030405060708ULL);
    EXPECT_EQ(in.i64(), -2);
    EXPECT_TRUE(in.boolean());
    EXPECT_EQ(in.text(10), "hi");
    EXPECT_NO_THROW(in.finish());
}

TEST(IpcCodec, EveryTruncationOfAMessageIsRefusedWithItsOffset) {
    const auto bytes = encode(Hello{kProtocolVersion, 42, "1.2.3"});
    for (std::size_t length = 0; length < bytes.size(); ++length) {
        Reader in(std::string_view(bytes).substr(0, length));
        try {
            Hello::read(in);
            in.finish();
            FAIL() << "a Hello cut to " << length << " bytes was read";
        } catch (const DecodeError& error) {
            EXPECT_LE(error.offset(), length);
            EXPECT_FALSE(error.hint().empty());
        }
    }
    Reader whole(bytes);
    const auto hello = Hello::read(whole);
    EXPECT_EQ(hello.pid, 42u);
    EXPECT_EQ(hello.build, "1.2.3");
}

TEST(IpcCodec, LengthsPastTheLimitOrTheMessageAndStrayBytesAreRefused) {
    Writer long_text;
    long_text.text(std::string(300, 'x'));
    Reader too_long(long_text.bytes());
    EXPECT_THROW(too_long.text(kMaxName), DecodeError);

    // A count that claims more items than bytes left: refused before anything is reserved.
    Writer huge_count;
    huge_count.u32(1000000);
    huge_count.u32(7);
    Reader counted(huge_count.bytes());
    EXPECT_THROW(counted.count(10000000, 4), DecodeError);
    Reader over_max(huge_count.bytes());
    EXPECT_THROW(over_max.count(10), DecodeError);

    const std::string two_byte("\x02", 1);
    Reader two(two_byte);
    EXPECT_THROW(two.boolean(), DecodeError);

    Writer ping;
    Ping{7}.write(ping);
    ping.u8(0);
    Frame frame{static_cast<std::uint16_t>(Type::ping), 1, ping.bytes(), {}};
    EXPECT_THROW(decode<Ping>(frame), DecodeError);
    frame.body.pop_back();
    EXPECT_EQ(decode<Ping>(frame).nonce, 7u);
    // The right bytes under another type are not taken either.
    EXPECT_THROW(decode<Pong>(frame), DecodeError);
}

TEST(IpcChannel, AFrameCrossesWithItsSequenceAndADescriptorThatStillWorks) {
    auto [supervisor, plane] = Channel::pair();
    int pipe_fds[2];
    ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
    const UniqueFd read_end(pipe_fds[0]);
    UniqueFd write_end(pipe_fds[1]);
    const int passed[] = {write_end.get()};
    send(supervisor, Ping{99}, 17, passed);
    write_end.reset();

    auto frame = plane.receive();
    ASSERT_TRUE(frame);
    EXPECT_EQ(frame->type, static_cast<std::uint16_t>(Type::ping));
    EXPECT_EQ(frame->seq, 17u);
    EXPECT_EQ(decode<Ping>(*frame).nonce, 99u);
    ASSERT_EQ(frame->fds.size(), 1u);
    EXPECT_EQ(::fcntl(frame->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    ASSERT_EQ(::write(frame->fds[0].get(), "x", 1), 1);
    char got = 0;
    ASSERT_EQ(::read(read_end.get(), &got, 1), 1);
    EXPECT_EQ(got, 'x');

    send(plane, Pong{99}, 17);
    const auto answer = supervisor.receive();
    ASSERT_TRUE(answer);
    EXPECT_EQ(decode<Pong>(*answer).nonce, 99u);
}

TEST(IpcChannel, NothingWaitingIsEagainAndAClosedPeerIsTheEnd) {
    auto [supervisor, plane] = Channel::pair();
    try {
        plane.receive(true);
        FAIL() << "a frame out of nothing";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EAGAIN);
    }
    supervisor.release().reset();
    EXPECT_FALSE(plane.receive());
    try {
        send(plane, Ping{1});
        FAIL() << "sent to nobody";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EPIPE);
    }
}

TEST(IpcChannel, AnOversizedFrameOrTooManyDescriptorsAreRefusedAndTheNextFrameStillArrives) {
    auto [supervisor, plane] = Channel::pair();
    // What a hostile peer could write on its end, bypassing Channel::send.
    int buffer = 512 * 1024;
    ASSERT_EQ(::setsockopt(supervisor.fd(), SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer), 0);
    const std::string big(kMaxFrame + 1, 'x');
    ASSERT_EQ(::send(supervisor.fd(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
    EXPECT_THROW(plane.receive(), std::runtime_error);

    const auto before = open_fds();
    std::vector<UniqueFd> many;
    std::vector<int> raw;
    for (std::size_t i = 0; i < kMaxFrameFds + 4; ++i) {
        many.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        raw.push_back(many.back().get());
    }
    {
        Writer frame;
        frame.u16(static_cast<std::uint16_t>(Type::ping));
        frame.u32(0);
        Ping{5}.write(frame);
        const auto bytes = frame.take();
        iovec data{const_cast<char*>(bytes.data()), bytes.size()};
        std::vector<char> control(CMSG_SPACE(sizeof(int) * raw.size()));
        msghdr message{};
        message.msg_iov = &data;
        message.msg_iovlen = 1;
        message.msg_control = control.data();
        message.msg_controllen = control.size();
        cmsghdr* header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * raw.size());
        std::memcpy(CMSG_DATA(header), raw.data(), sizeof(int) * raw.size());
        ASSERT_GT(::sendmsg(supervisor.fd(), &message, 0), 0);
    }
    many.clear();
    EXPECT_THROW(plane.receive(), std::runtime_error);
    // Every descriptor of the refused frame is closed again.
    EXPECT_EQ(open_fds(), before);

    // A frame too short for its header.
    ASSERT_EQ(::send(supervisor.fd(), "\x01\x00", 2, 0), 2);
    EXPECT_THROW(plane.receive(), DecodeError);

    send(supervisor, Ping{6});
    const auto next = plane.receive();
    ASSERT_TRUE(next);
    EXPECT_EQ(decode<Ping>(*next).nonce, 6u);
}

TEST(IpcChannel, TheSenderRefusesAFramePastTheLimit) {
    auto [supervisor, plane] = Channel::pair();
    EXPECT_THROW(supervisor.send(1, 0, std::string(kMaxFrame, 'x')), std::length_error);
}

}  // namespace
}  // namespace tameflare::ipc
