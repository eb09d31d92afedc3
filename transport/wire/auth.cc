#include "transport/wire/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "transport/wire/messages.h"

namespace strata::wire {
namespace {

void AppendId(std::vector<unsigned char>* out, std::string_view id) {
  const auto n = static_cast<uint32_t>(id.size());
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<unsigned char>(n >> (8 * i)));
  out->insert(out->end(), id.begin(), id.end());
}

}  // namespace

std::vector<std::byte> HandshakeMac(std::string_view secret, MacRole role,
                                    std::span<const std::byte> client_nonce,
                                    std::span<const std::byte> server_nonce,
                                    std::string_view client_id, std::string_view server_id) {
  std::vector<unsigned char> msg;
  const std::string_view label = role == MacRole::kServer ? "strata/1 server" : "strata/1 client";
  msg.insert(msg.end(), label.begin(), label.end());
  auto append = [&](std::span<const std::byte> b) {
    const auto* p = reinterpret_cast<const unsigned char*>(b.data());
    msg.insert(msg.end(), p, p + b.size());
  };
  append(client_nonce);
  append(server_nonce);
  AppendId(&msg, client_id);
  AppendId(&msg, server_id);
  std::vector<std::byte> mac(kMacSize);
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), msg.data(), msg.size(),
       reinterpret_cast<unsigned char*>(mac.data()), &len);
  mac.resize(len);
  return mac;
}

bool VerifyHandshakeMac(std::string_view secret, MacRole role,
                        std::span<const std::byte> client_nonce,
                        std::span<const std::byte> server_nonce, std::string_view client_id,
                        std::string_view server_id, std::span<const std::byte> mac) {
  const auto want = HandshakeMac(secret, role, client_nonce, server_nonce, client_id, server_id);
  return mac.size() == want.size() && CRYPTO_memcmp(mac.data(), want.data(), want.size()) == 0;
}

std::vector<std::byte> MessageMac(std::string_view secret, std::string_view message) {
  std::vector<std::byte> mac(kMacSize);
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
       reinterpret_cast<unsigned char*>(mac.data()), &len);
  mac.resize(len);
  return mac;
}

bool VerifyMessageMac(std::string_view secret, std::string_view message,
                      std::span<const std::byte> mac) {
  const auto want = MessageMac(secret, message);
  return mac.size() == want.size() && CRYPTO_memcmp(mac.data(), want.data(), want.size()) == 0;
}

std::vector<std::byte> RandomNonce() {
  std::vector<std::byte> nonce(kNonceSize);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), kNonceSize) != 1) std::abort();
  return nonce;
}

Result<std::string> LoadClusterSecret(const ClusterSecretSource& source) {
  std::string secret;
  std::string from;
  if (!source.value.empty()) {
    secret = source.value;
    from = "the configuration";
  } else if (const char* env =
                 source.env_var.empty() ? nullptr : std::getenv(source.env_var.c_str());
             env != nullptr && *env != '\0') {
    secret = env;
    from = "$" + source.env_var;
  } else if (!source.file.empty()) {
    std::ifstream in(source.file, std::ios::binary);
    if (!in)
      return Status::InvalidArgument("cluster secret file " + source.file + " cannot be read");
    std::ostringstream ss;
    ss << in.rdbuf();
    secret = ss.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    from = source.file;
  } else {
    return Status::InvalidArgument("no cluster secret: set it in the configuration, in $" +
                                   source.env_var + ", or in a secret file");
  }
  if (secret.size() < 16)
    return Status::InvalidArgument("cluster secret from " + from + " is shorter than 16 bytes");
  return secret;
}

}  // namespace strata::wire
