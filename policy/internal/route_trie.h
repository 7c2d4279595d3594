// Path-template matching: a trie over path segments. Literal segments beat
// {param}, which beats {param+} / {param*}; ties are broken by backtracking,
// so the first complete (path and method) match in that order wins.
#pragma once

#include "policy/connector.h"

#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tameflare::policy {

class RouteTrie {
public:
    // Returns an error message, or "" when the route was added.
    std::string add(const Route& route);
    std::optional<ConnectorDef::Match> match(std::string_view method, std::span<const std::string> segments) const;

private:
    // ASCII case-insensitive order, usable with string_view keys (no copies).
    struct CaseInsensitiveLess {
        using is_transparent = void;
        bool operator()(std::string_view a, std::string_view b) const noexcept;
    };
    struct Node {
        std::map<std::string, std::unique_ptr<Node>, CaseInsensitiveLess> literals;
        std::unique_ptr<Node> param;
        std::vector<const Route*> terminal;   // routes ending here
        std::vector<const Route*> rest_plus;  // {x+} at this position
        std::vector<const Route*> rest_star;  // {x*} at this position
    };
    static const Route* pick(const std::vector<const Route*>& routes, std::string_view method);
    const Route* walk(const Node& node, std::string_view method, std::span<const std::string> segments,
                      std::size_t index, std::vector<std::string>& captures) const;

    Node root_;
};

}  // namespace tameflare::policy
