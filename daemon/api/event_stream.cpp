// Server-Sent Events at /v1/events: each stream subscribes to Control's
// event hub; a publisher's thread queues what the caller may see, the io
// thread writes it out in chunks, with keep-alives between.
#include "daemon/api/api_internal.h"

#include "common/log.h"
#include "daemon/control/events.h"

#include <algorithm>
#include <array>
#include <deque>
#include <mutex>

namespace tameflare::api {

using namespace detail;

namespace detail {

// What a publisher's thread hands to one event stream.
struct EventQueue {
    std::mutex mutex;
    std::deque<control::Event> events;
    bool open = true;       // false once the stream ended: nothing is queued or posted after
    bool overflow = false;  // the client fell kMaxQueuedEvents behind
    bool notified = false;  // a wake-up is posted and not yet consumed
    bool client_gone = false;
    // io thread only, valid while open.
    net::steady_timer* wake = nullptr;
    Connection* connection = nullptr;
};

}  // namespace detail

namespace {

bool visible_to(const control::Event& event, Role role, uid_t uid) {
    return static_cast<int>(role) >= event.visible_to || (event.owner_uid == uid && uid != static_cast<uid_t>(-1));
}

std::string sse_frame(const control::Event& event) {
    std::string frame = "id: " + std::to_string(event.id) + "\n";
    // The type is ours, but a newline in it would end the frame early.
    std::string type = event.type;
    std::replace(type.begin(), type.end(), '\n', ' ');
    frame += "event: " + type + "\n";
    frame += "data: " + event.data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
    return frame;
}

// An event for a stream's queue, on the publisher's thread: those the
// caller may see and asked for are queued and one wake-up is posted; a queue
// kMaxQueuedEvents behind ends its stream.
void enqueue(const std::shared_ptr<EventQueue>& queue, const control::Event& event, Role role, uid_t uid,
             const std::set<std::string>& types, const net::io_context::executor_type& executor) {
    if (!visible_to(event, role, uid)) return;
    if (!types.empty() && types.count(event.type) == 0) return;
    std::lock_guard lock(queue->mutex);
    if (!queue->open) return;
    if (queue->overflow) return;
    if (queue->events.size() >= kMaxQueuedEvents) {
        // The stream may sit in a write the client does not read: end it
        // now rather than when that write times out.
        queue->overflow = true;
        queue->events.clear();
        net::post(executor, [queue] {
            std::lock_guard inner(queue->mutex);
            if (!queue->open) return;
            if (queue->connection != nullptr) queue->connection->stream.cancel();
            if (queue->wake != nullptr) queue->wake->cancel();
        });
        return;
    }
    queue->events.push_back(event);
    if (queue->notified) return;
    queue->notified = true;
    net::post(executor, [queue] {
        std::lock_guard inner(queue->mutex);
        if (queue->open && queue->wake != nullptr) queue->wake->cancel();
    });
}

}  // namespace

// Reads (and discards) whatever the stream's client sends, to learn at once
// when it goes away instead of at the next keep-alive.
net::awaitable<void> ApiServer::Impl::watch_close(std::shared_ptr<Connection> connection,
                                                  std::shared_ptr<EventQueue> queue) {
    std::array<char, 512> discard{};
    for (;;) {
        error_code error;
        // No deadline for the read (the stream's writes keep theirs): a
        // pending read keeps its expiry even when a write sets a new one.
        connection->stream.expires_never();
        auto read = connection->stream.async_read_some(net::buffer(discard), net::redirect_error(kToken, error));
        co_await std::move(read);
        if (error) break;
    }
    std::lock_guard lock(queue->mutex);
    if (!queue->open) co_return;
    queue->client_gone = true;
    if (queue->wake != nullptr) queue->wake->cancel();
}

net::awaitable<void> ApiServer::Impl::stream_events(Connection& connection, const Caller& caller, Role role,
                                                    std::set<std::string> types, unsigned version) {
    net::steady_timer wake(io);
    auto queue = std::make_shared<EventQueue>();
    queue->wake = &wake;
    queue->connection = &connection;
    connection.wake = &wake;
    auto& hub = control.events();
    const uid_t uid = caller.uid;
    auto executor = io.get_executor();
    // Runs on the publisher's thread: filter, queue, and post one wake-up.
    const auto subscription = hub.subscribe([queue, role, uid, types, executor](const control::Event& event) {
        enqueue(queue, event, role, uid, types, executor);
    });
    // Whichever way this coroutine ends (even destroyed with the io_context),
    // nothing is queued or posted for it afterwards.
    struct Unsubscribe {
        control::EventHub& hub;
        std::uint64_t subscription;
        std::shared_ptr<EventQueue> queue;
        Connection& connection;
        ~Unsubscribe() {
            {
                std::lock_guard lock(queue->mutex);
                queue->open = false;
                queue->wake = nullptr;
                queue->connection = nullptr;
            }
            connection.wake = nullptr;
            hub.unsubscribe(subscription);
        }
    } unsubscribe{hub, subscription, queue, connection};

    http::response<http::empty_body> head{http::status::ok, version};
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-store");
    head.chunked(true);
    http::response_serializer<http::empty_body> serializer{head};
    error_code error;
    connection.stream.expires_after(kWriteTimeout);
    auto send_head = http::async_write_header(connection.stream, serializer, net::redirect_error(kToken, error));
    co_await std::move(send_head);
    if (error) co_return;
    net::co_spawn(io, watch_close(*connection.self, queue), net::detached);

    std::string pending = ": connected\n\n";
    auto next_keep_alive = std::chrono::steady_clock::now() + kKeepAlive;
    while (!stopping) {
        if (pending.empty()) {
            bool gone = false;
            std::deque<control::Event> batch;
            {
                std::lock_guard lock(queue->mutex);
                batch.swap(queue->events);
                gone = queue->client_gone || queue->overflow;
                queue->notified = false;
            }
            if (gone) break;
            for (const auto& event : batch) pending += sse_frame(event);
        }
        if (pending.empty() && std::chrono::steady_clock::now() >= next_keep_alive) pending = ": keep-alive\n\n";
        if (pending.empty()) {
            wake.expires_at(next_keep_alive);
            auto wait = wake.async_wait(net::redirect_error(kToken, error));
            co_await std::move(wait);  // cancelled: events, the client left, or stop()
            continue;
        }
        // A chunk of frames; its write is bounded like any other.
        connection.stream.expires_after(kWriteTimeout);
        auto send = net::async_write(connection.stream, http::make_chunk(net::buffer(pending)),
                                     net::redirect_error(kToken, error));
        co_await std::move(send);
        if (error) break;
        pending.clear();
        next_keep_alive = std::chrono::steady_clock::now() + kKeepAlive;
    }
    std::lock_guard lock(queue->mutex);
    if (queue->overflow) {
        log(LogLevel::notice, "event stream dropped: the client fell too far behind",
            {{"CALLER", caller.describe()}, {"QUEUED_EVENTS", std::to_string(kMaxQueuedEvents)}});
    }
}

}  // namespace tameflare::api
