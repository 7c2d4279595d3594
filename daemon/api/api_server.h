// The REST control socket: HTTP/1.1 (Boost.Beast) over a unix socket, JSON
// under /v1/, Server-Sent Events at /v1/events, Prometheus at /metrics and
// the OpenAPI document at /v1/openapi.json. Every request is authorized by
// Control with the peer's kernel credentials (SO_PEERCRED, SO_PEERGROUPS,
// the cgroup of SO_PEERPIDFD). docs/api.md is the reference.
#pragma once

#include "common/unique_fd.h"

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tameflare::control {
class Control;
}

namespace tameflare::api {

struct ApiOptions {
    std::filesystem::path socket;  // bound (after removing a stale socket) unless `listening` is given
    std::string group;             // the socket's group; "" or unknown: root's, with a logged warning
    mode_t mode = 0660;
    // Groups (names or gids) that may connect besides `group`: the other role
    // groups, given read and write by POSIX ACL entries on the socket (a
    // member need not also be a viewer). Unknown groups are skipped.
    std::vector<std::string> also_groups;
    // An already listening socket (systemd socket activation); `socket`,
    // `group` and `mode` are then systemd's business.
    std::optional<UniqueFd> listening;
    std::size_t max_body_bytes = std::size_t{1} << 20;
    std::size_t max_connections = 256;
};

class ApiServer {
public:
    // Binds (or adopts) the socket; throws std::system_error when it cannot.
    ApiServer(ApiOptions options, control::Control& control);
    ~ApiServer();
    ApiServer(const ApiServer&) = delete;
    ApiServer& operator=(const ApiServer&) = delete;

    void start();  // serves on its own thread
    void stop();   // closes the socket and every connection, joins (also done by the destructor)

    [[nodiscard]] const std::filesystem::path& path() const;
    // Whether its event loop runs a posted handler within `timeout` (the watchdog).
    [[nodiscard]] bool responsive(std::chrono::milliseconds timeout) const;

    // The OpenAPI 3.0 document served at /v1/openapi.json.
    static const std::string& openapi();

    // Every route the server answers ("GET", "/v1/gateways/{name}"), in the
    // OpenAPI document's path syntax: the tests hold the two to each other.
    struct Route {
        std::string method;
        std::string path;
    };
    static std::vector<Route> routes();

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace tameflare::api
