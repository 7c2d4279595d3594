#include "daemon/dataplane/host.h"

#include <openssl/x509.h>

namespace tameflare::dataplane {

void DataPlaneHost::detach() {
    const std::lock_guard lock(target_->mutex);
    target_->link = nullptr;
}

void DataPlaneHost::handle(const ipc::Frame& frame) {
    switch (static_cast<Type>(frame.type)) {
        case Type::records:
            for (auto& record : ipc::decode<Records>(frame).records) services_.traffic->record(std::move(record));
            return;
        case Type::commit: {
            auto commit = ipc::decode<Commit>(frame);
            services_.traffic->commit(std::move(commit.record), [target = target_, seq = frame.seq](std::string error) {
                answer(target, [&](Link& link) { link.reply(seq, Committed{std::move(error)}); });
            });
            return;
        }
        case Type::submit: {
            const auto submit = ipc::decode<Submit>(frame);
            if (services_.approvals == nullptr) {
                answer(target_, [&](Link& link) {
                    link.post(Answer{submit.request.id, {false, "no approval broker: held requests are denied", ""}});
                });
                return;
            }
            services_.approvals->submit(
                submit.request, [target = target_, id = submit.request.id](proxy::ApprovalAnswer given) {
                    answer(target, [&](Link& link) { link.post(Answer{id, std::move(given)}); });
                });
            return;
        }
        case Type::withdraw:
            if (services_.approvals != nullptr) services_.approvals->withdraw(ipc::decode<Withdraw>(frame).id);
            return;
        case Type::credential_request: {
            const auto request = ipc::decode<CredentialRequest>(frame);
            const auto value =
                services_.credentials == nullptr ? std::nullopt : services_.credentials->credential(request.name);
            answer(target_, [&](Link& link) {
                link.reply(frame.seq, Credential{value.has_value(), value.value_or("")});
            });
            return;
        }
        case Type::sign_leaf: sign(frame.seq, ipc::decode<SignLeaf>(frame)); return;
        case Type::origin_request: {
            const auto request = ipc::decode<OriginRequest>(frame);
            const auto origin =
                services_.origins ? services_.origins(request.netns_cookie, request.client) : std::nullopt;
            const auto reply = origin ? OriginAnswer{true, origin->destination, origin->agent} : OriginAnswer{};
            answer(target_, [&](Link& link) { link.reply(frame.seq, reply); });
            return;
        }
        default:
            throw ipc::DecodeError("a frame of type " + std::to_string(frame.type) + " the data plane does not send",
                                   0);
    }
}

void DataPlaneHost::sign(std::uint32_t seq, const SignLeaf& request) {
    const auto reply = [&](Leaf leaf) { answer(target_, [&](Link& link) { link.reply(seq, leaf); }); };
    const auto* bytes = reinterpret_cast<const unsigned char*>(request.public_key.data());
    const proxy::EvpPkeyPtr key(d2i_PUBKEY(nullptr, &bytes, static_cast<long>(request.public_key.size())));
    if (!key) {
        reply(Leaf{"", "the public key to certify is not DER"});
        return;
    }
    try {
        const auto certificate = services_.ca->sign_leaf(request.server_name, key.get());
        unsigned char* der = nullptr;
        const int length = i2d_X509(certificate.get(), &der);
        if (length <= 0) throw proxy::CaError("cannot encode a leaf certificate");
        std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
        OPENSSL_free(der);
        reply(Leaf{std::move(out), ""});
    } catch (const std::exception& error) {
        reply(Leaf{"", error.what()});
    }
}

}  // namespace tameflare::dataplane
