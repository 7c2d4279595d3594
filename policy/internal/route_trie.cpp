#include "policy/internal/route_trie.h"

#include "policy/internal/text.h"

#include <algorithm>

namespace tameflare::policy {

namespace {

bool same_methods(const Route& a, const Route& b) {
    if (a.methods.empty() || b.methods.empty()) return a.methods.empty() && b.methods.empty();
    return std::any_of(a.methods.begin(), a.methods.end(), [&](const std::string& m) {
        return std::find(b.methods.begin(), b.methods.end(), m) != b.methods.end();
    });
}

std::string join_rest(std::span<const std::string> segments, std::size_t from) {
    std::string out;
    for (std::size_t i = from; i < segments.size(); ++i) {
        if (i > from) out += '/';
        out += segments[i];
    }
    return out;
}

}  // namespace

bool RouteTrie::CaseInsensitiveLess::operator()(std::string_view a, std::string_view b) const noexcept {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                        [](char x, char y) { return ascii_lower(x) < ascii_lower(y); });
}

std::string RouteTrie::add(const Route& route) {
    Node* node = &root_;
    const auto segments = split_path_template(route.path);
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const auto& segment = segments[i];
        const bool is_param = segment.front() == '{';
        if (is_param && (segment.ends_with("+}") || segment.ends_with("*}"))) {
            if (i + 1 != segments.size()) return "a {name+} or {name*} parameter must be the last segment";
            auto& list = segment.ends_with("+}") ? node->rest_plus : node->rest_star;
            for (const Route* other : list) {
                if (same_methods(*other, route)) return "duplicate of route \"" + other->path + "\"";
            }
            list.push_back(&route);
            return {};
        }
        if (is_param) {
            if (!node->param) node->param = std::make_unique<Node>();
            node = node->param.get();
        } else {
            auto& child = node->literals[segment];
            if (!child) child = std::make_unique<Node>();
            node = child.get();
        }
    }
    for (const Route* other : node->terminal) {
        if (same_methods(*other, route)) return "duplicate of route \"" + other->path + "\"";
    }
    node->terminal.push_back(&route);
    return {};
}

const Route* RouteTrie::pick(const std::vector<const Route*>& routes, std::string_view method) {
    const Route* any = nullptr;
    for (const Route* route : routes) {
        if (route->methods.empty()) {
            any = route;
        } else if (std::find(route->methods.begin(), route->methods.end(), method) != route->methods.end()) {
            return route;
        }
    }
    return any;
}

const Route* RouteTrie::walk(const Node& node, std::string_view method, std::span<const std::string> segments,
                             std::size_t index, std::vector<std::string>& captures) const {
    if (index == segments.size()) {
        if (const Route* route = pick(node.terminal, method)) return route;
    } else {
        if (const auto it = node.literals.find(std::string_view(segments[index])); it != node.literals.end()) {
            if (const Route* route = walk(*it->second, method, segments, index + 1, captures)) return route;
        }
        if (node.param) {
            captures.push_back(segments[index]);
            if (const Route* route = walk(*node.param, method, segments, index + 1, captures)) return route;
            captures.pop_back();
        }
        if (const Route* route = pick(node.rest_plus, method)) {
            captures.push_back(join_rest(segments, index));
            return route;
        }
    }
    if (const Route* route = pick(node.rest_star, method)) {
        captures.push_back(join_rest(segments, index));
        return route;
    }
    return nullptr;
}

std::optional<ConnectorDef::Match> RouteTrie::match(std::string_view method,
                                                    std::span<const std::string> segments) const {
    std::vector<std::string> captures;
    const Route* route = walk(root_, method, segments, 0, captures);
    if (!route) return std::nullopt;
    return ConnectorDef::Match{route, std::move(captures)};
}

}  // namespace tameflare::policy
