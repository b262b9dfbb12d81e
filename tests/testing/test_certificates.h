// Certificates for TLS tests, made at test time with the openssl command-line tool (Debian
// package openssl) into a scratch directory: a CA, a server certificate for 127.0.0.1 and
// localhost signed by it, a client certificate signed by it, and a second, unrelated CA with a
// client certificate of its own. EC P-256 keys (fast to make), valid for two days.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/server_process.h"

namespace moe::testing {

struct TestCertificates {
  // Paths of PEM files.
  std::string ca_cert;
  std::string server_cert;  // CN=localhost, subjectAltName DNS:localhost, IP:127.0.0.1
  std::string server_key;
  std::string client_cert;  // CN=moe-test-client, signed by ca_cert
  std::string client_key;
  std::string other_ca_cert;      // an unrelated CA
  std::string other_client_cert;  // signed by other_ca_cert
  std::string other_client_key;
};

// The whole file (empty when it cannot be read).
inline std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// The openssl binary on PATH (or /usr/bin/openssl).
inline std::string OpenSslBinary() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "", ':')) {
    if (dir.empty()) continue;
    const std::string candidate = absl::StrCat(dir, "/openssl");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "/usr/bin/openssl";
}

// Runs `openssl args...`; the error carries its output.
inline absl::Status RunOpenSsl(const ScratchDir& dir, const std::vector<std::string>& args) {
  const std::string log = dir.File("openssl.log");
  WriteTextFile(log, "");
  auto process = ChildProcess::Spawn(OpenSslBinary(), args, log);
  if (!process.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        process.status().message(), " (install the Debian package openssl: scripts/setup.sh)"));
  }
  auto exit_code = (*process)->WaitForExit(absl::Seconds(60));
  if (!exit_code.ok()) return exit_code.status();
  if (*exit_code != 0) {
    return absl::InternalError(absl::StrCat("openssl ", args.front(), " exited with ", *exit_code,
                                            ":\n", (*process)->ReadLog()));
  }
  return absl::OkStatus();
}

// A self-signed CA certificate and key at `name`.pem / `name`.key.
inline absl::Status MakeCa(const ScratchDir& dir, const std::string& name) {
  return RunOpenSsl(
      dir, {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", dir.File(name + ".key"), "-out", dir.File(name + ".pem"), "-days", "2",
            "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
            "keyUsage=critical,keyCertSign,cRLSign"});
}

// A leaf certificate and key at `name`.pem / `name`.key signed by CA `ca`, with `extensions`
// (one per line, openssl x509 -extfile syntax).
inline absl::Status MakeLeaf(const ScratchDir& dir, const std::string& name, const std::string& ca,
                             const std::string& subject, const std::string& extensions,
                             int serial) {
  if (absl::Status status = RunOpenSsl(
          dir,
          {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", dir.File(name + ".key"), "-out", dir.File(name + ".csr"), "-subj", subject});
      !status.ok()) {
    return status;
  }
  WriteTextFile(dir.File(name + ".ext"), extensions);
  return RunOpenSsl(
      dir, {"x509", "-req", "-in", dir.File(name + ".csr"), "-CA", dir.File(ca + ".pem"), "-CAkey",
            dir.File(ca + ".key"), "-set_serial", absl::StrCat(serial), "-days", "2", "-out",
            dir.File(name + ".pem"), "-extfile", dir.File(name + ".ext")});
}

inline absl::StatusOr<TestCertificates> MakeTestCertificates(const ScratchDir& dir) {
  const std::string server_extensions =
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
      "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n";
  const std::string client_extensions =
      "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
      "basicConstraints=CA:FALSE\n";
  for (absl::Status status : {
           MakeCa(dir, "ca"),
           MakeLeaf(dir, "server", "ca", "/CN=localhost", server_extensions, 1001),
           MakeLeaf(dir, "client", "ca", "/CN=moe-test-client", client_extensions, 1002),
           MakeCa(dir, "other-ca"),
           MakeLeaf(dir, "other-client", "other-ca", "/CN=moe-other-client", client_extensions,
                    2001),
       }) {
    if (!status.ok()) return status;
  }
  return TestCertificates{.ca_cert = dir.File("ca.pem"),
                          .server_cert = dir.File("server.pem"),
                          .server_key = dir.File("server.key"),
                          .client_cert = dir.File("client.pem"),
                          .client_key = dir.File("client.key"),
                          .other_ca_cert = dir.File("other-ca.pem"),
                          .other_client_cert = dir.File("other-client.pem"),
                          .other_client_key = dir.File("other-client.key")};
}

}  // namespace moe::testing
