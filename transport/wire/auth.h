// Admission of peers (docs/wire-protocol.md, "Handshake"): a challenge-response over the cluster
// secret, so that the secret itself never travels and a recorded handshake cannot be replayed.
//
//   client -> server  Hello    {version, client_id, client_nonce}
//   server -> client  HelloAck {server_id, server_nonce, server_mac}
//   client -> server  Auth     {client_mac}
//   server -> client  AuthOk   (or Error PermissionDenied, and nothing else is served)
//
//   server_mac = HMAC-SHA256(secret, "strata/1 server" | transcript)
//   client_mac = HMAC-SHA256(secret, "strata/1 client" | transcript)
//   transcript = client_nonce | server_nonce | LE32(len) client_id | LE32(len) server_id
//
// HMAC-SHA256 comes from OpenSSL's libcrypto (private to transport/); MACs are compared in
// constant time.
//
// Thread-safety: pure functions; RandomNonce() is thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/result.h"
#include "strata/status.h"

namespace strata::wire {

enum class MacRole { kServer, kClient };

// The MAC one side sends; kMacSize bytes.
std::vector<std::byte> HandshakeMac(std::string_view secret, MacRole role,
                                    std::span<const std::byte> client_nonce,
                                    std::span<const std::byte> server_nonce,
                                    std::string_view client_id, std::string_view server_id);

// True when `mac` equals the expected MAC; compares in constant time.
bool VerifyHandshakeMac(std::string_view secret, MacRole role,
                        std::span<const std::byte> client_nonce,
                        std::span<const std::byte> server_nonce, std::string_view client_id,
                        std::string_view server_id, std::span<const std::byte> mac);

// HMAC-SHA256(secret, message): the operator's inspect endpoint signs its requests and replies
// with it (lib/daemon/inspect_http.h). kMacSize bytes.
std::vector<std::byte> MessageMac(std::string_view secret, std::string_view message);

// True when `mac` equals MessageMac(secret, message); compares in constant time.
bool VerifyMessageMac(std::string_view secret, std::string_view message,
                      std::span<const std::byte> mac);

// kNonceSize bytes from the operating system's CSPRNG.
std::vector<std::byte> RandomNonce();

// Where a node finds the cluster secret, first match wins: `value`; the environment variable
// `env_var` (Default: STRATA_CLUSTER_SECRET); the file `file` (trailing newline stripped).
// InvalidArgument when none gives one, or when it is shorter than 16 bytes.
struct ClusterSecretSource {
  std::string value;
  std::string env_var = "STRATA_CLUSTER_SECRET";
  std::string file;
};
Result<std::string> LoadClusterSecret(const ClusterSecretSource& source);

}  // namespace strata::wire
