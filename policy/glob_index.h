// Finds every glob pattern that matches a text without trying them all:
// patterns are filed in a character trie under their literal prefix (the
// part before the first '*' or '?'), so a lookup walks the text once and
// tries only the patterns whose prefix it has.
#pragma once

#include "policy/glob.h"

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tameflare::policy {

template <class T>
class GlobIndex {
public:
    void add(std::string pattern, T value) {
        const std::string_view prefix = std::string_view(pattern).substr(0, pattern.find_first_of("*?"));
        Node* node = &root_;
        for (const char c : prefix) node = &node->child(c);
        node->entries.emplace_back(std::move(pattern), std::move(value));
        ++size_;
    }

    // Calls `visit(value)` for every pattern that matches `text`.
    template <class Visit>
    void for_each_match(std::string_view text, Visit&& visit) const {
        const Node* node = &root_;
        std::size_t depth = 0;
        while (node) {
            for (const auto& [pattern, value] : node->entries) {
                if (glob_match(pattern, text)) visit(value);
            }
            if (depth == text.size()) break;
            node = node->find(text[depth++]);
        }
    }

    [[nodiscard]] std::size_t size() const { return size_; }

private:
    struct Node {
        std::vector<std::pair<char, std::unique_ptr<Node>>> children;
        std::vector<std::pair<std::string, T>> entries;

        const Node* find(char c) const {
            for (const auto& [key, child] : children) {
                if (key == c) return child.get();
            }
            return nullptr;
        }
        Node& child(char c) {
            for (auto& [key, child] : children) {
                if (key == c) return *child;
            }
            children.emplace_back(c, std::make_unique<Node>());
            return *children.back().second;
        }
    };
    Node root_;
    std::size_t size_ = 0;
};

}  // namespace tameflare::policy
