// The REST socket: bound (or adopted from systemd) with its group and ACL
// entries, and the server's lifetime (start, stop, the watchdog's probe).
#include "daemon/api/api_server.h"

#include "daemon/api/api_internal.h"

#include "common/log.h"
#include "common/users.h"
#include "daemon/proxy/liveness.h"

#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <system_error>

namespace tameflare::api {

// Generated from openapi.json by embed_openapi.cmake.
extern const char* const kOpenApiDocument;

using namespace detail;

void ApiServer::Impl::bind() {
    if (options.listening) {
        error_code error;
        acceptor.assign(local(), options.listening->get(), error);
        if (error) throw std::system_error(error, "adopting the REST socket");
        options.listening->release();  // the acceptor owns it now
        adopted = true;
        path = acceptor.local_endpoint(error).path();
        grant_groups();  // systemd set the mode and group (SocketMode=, SocketGroup=)
        return;
    }
    path = options.socket;
    if (path.native().size() >= sizeof(sockaddr_un::sun_path)) {
        throw std::system_error(std::make_error_code(std::errc::filename_too_long),
                                "the REST socket path " + path.string() + " is too long for a unix socket");
    }
    std::error_code fs_error;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), fs_error);
    struct stat existing {};
    if (::lstat(path.c_str(), &existing) == 0) {
        if (!S_ISSOCK(existing.st_mode)) {
            throw std::system_error(std::make_error_code(std::errc::file_exists),
                                    path.string() + " exists and is not a socket; not replacing it");
        }
        // A live server behind it keeps it: two daemons must not share one.
        local::socket probe(io);
        error_code error;
        probe.connect(local::endpoint(path.string()), error);
        if (!error) {
            throw std::system_error(std::make_error_code(std::errc::address_in_use),
                                    "another server is listening on " + path.string());
        }
        ::unlink(path.c_str());
    }
    acceptor.open(local());
    acceptor.bind(local::endpoint(path.string()));
    acceptor.listen(net::socket_base::max_listen_connections);
    if (::chmod(path.c_str(), options.mode) != 0) {
        throw std::system_error(errno, std::generic_category(), "chmod " + path.string());
    }
    if (!options.group.empty()) {
        const auto gid = group_id(options.group);
        if (!gid) {
            log(LogLevel::warning, "the REST socket's group does not exist; only root (and root's group) may connect",
                {{"API_SOCKET", path.string()},
                 {"GROUP", options.group},
                 {"HINT", "create the group (systemd-sysusers) or set api.socket_group"}});
        } else if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
            throw std::system_error(errno, std::generic_category(), "chown " + path.string() + " to " + options.group);
        }
    }
    grant_groups();
}

// connect(2) on a unix socket needs write permission on it: one ACL entry
// (rw) per role group, so that each role's members reach the daemon (which
// then authorizes every call by the caller's groups itself).
void ApiServer::Impl::grant_groups() const {
    std::vector<gid_t> gids;
    for (const auto& group : options.also_groups) {
        if (const auto gid = group.empty() ? std::nullopt : group_id(group)) gids.push_back(*gid);
    }
    if (gids.empty()) return;
    // acl_create_entry may move the ACL: the holder frees whichever it is at the end.
    struct Acl {
        acl_t acl;
        explicit Acl(acl_t given) : acl(given) {}
        Acl(const Acl&) = delete;
        Acl& operator=(const Acl&) = delete;
        ~Acl() {
            if (acl != nullptr) ::acl_free(acl);
        }
    } held{::acl_get_file(path.c_str(), ACL_TYPE_ACCESS)};
    bool ok = held.acl != nullptr;
    acl_t& raw = held.acl;
    for (auto& gid : gids) {
        acl_entry_t entry = nullptr;
        acl_permset_t permissions = nullptr;
        ok = ok && ::acl_create_entry(&raw, &entry) == 0 && ::acl_set_tag_type(entry, ACL_GROUP) == 0 &&
             ::acl_set_qualifier(entry, &gid) == 0 && ::acl_get_permset(entry, &permissions) == 0 &&
             ::acl_clear_perms(permissions) == 0 && ::acl_add_perm(permissions, ACL_READ) == 0 &&
             ::acl_add_perm(permissions, ACL_WRITE) == 0;
    }
    ok = ok && ::acl_calc_mask(&raw) == 0 && ::acl_set_file(path.c_str(), ACL_TYPE_ACCESS, raw) == 0;
    if (!ok) {
        log(LogLevel::warning,
            std::string("cannot give the role groups access to the REST socket: ") + std::strerror(errno),
            {{"API_SOCKET", path.string()},
             {"HINT", "its file system needs POSIX ACLs; meanwhile add role members to the socket's group"}});
    }
}

void ApiServer::Impl::close_everything() {
    stopping = true;
    error_code ignored;
    acceptor.close(ignored);
    for (auto& connection : connections) {
        connection->stream.socket().shutdown(local::socket::shutdown_both, ignored);
        connection->stream.close();
        if (connection->wake != nullptr) connection->wake->cancel();
    }
}

// ---------------------------------------------------------------------------

ApiServer::ApiServer(ApiOptions options, control::Control& control)
    : impl_(std::make_unique<Impl>(std::move(options), control)) {
    impl_->bind();
}

ApiServer::~ApiServer() {
    stop();
}

bool ApiServer::responsive(std::chrono::milliseconds timeout) const {
    if (!impl_->thread.joinable()) return true;
    boost::asio::io_context* loop = &impl_->io;
    return proxy::loops_answer(std::span(&loop, 1), timeout);
}

void ApiServer::start() {
    if (impl_->started) return;
    if (impl_->stopping) throw std::logic_error("a stopped REST server cannot be started again");
    impl_->started = true;
    impl_->work.emplace(impl_->io.get_executor());
    net::co_spawn(impl_->io, impl_->accept_loop(), net::detached);
    impl_->thread = std::thread([impl = impl_.get()] { impl->io.run(); });
}

void ApiServer::stop() {
    if (impl_->started) {
        impl_->started = false;
        // Every connection is closed on the io thread; their coroutines then
        // end on their own, and run() returns once nothing is left.
        net::post(impl_->io, [impl = impl_.get()] { impl->close_everything(); });
        impl_->work.reset();
        impl_->thread.join();
    } else {
        error_code ignored;
        impl_->acceptor.close(ignored);
        impl_->stopping = true;
    }
    // Ours to remove when we bound it; systemd's when it made it.
    if (!impl_->adopted && !impl_->removed) {
        impl_->removed = true;
        ::unlink(impl_->path.c_str());
    }
}

const std::filesystem::path& ApiServer::path() const {
    return impl_->path;
}

const std::string& ApiServer::openapi() {
    static const std::string document(kOpenApiDocument);
    return document;
}

std::vector<ApiServer::Route> ApiServer::routes() {
    std::vector<Route> out;
    out.reserve(kRoutes.size());
    for (const auto& route : kRoutes) {
        out.push_back({std::string(as_view(http::to_string(route.method))), std::string(route.path)});
    }
    return out;
}

}  // namespace tameflare::api
