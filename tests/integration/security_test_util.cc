#include "tests/integration/security_test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "tests/integration/integration_util.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/test_certificates.h"

namespace moe::integration {
namespace {

std::chrono::system_clock::time_point DeadlineIn(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

}  // namespace

Metadata BearerToken(const std::string& token) {
  return {{"authorization", absl::StrCat("Bearer ", token)}};
}

absl::StatusOr<std::unique_ptr<testing::ServerProcess>> StartServerWithSecurity(
    std::vector<std::string> args, testing::ClientSecurity security) {
  args.push_back("--backend");
  args.push_back("cpu");
  testing::ServerProcessOptions options;
  options.binary = ServerBinary();
  options.args = std::move(args);
  options.client_security = std::move(security);
  return testing::ServerProcess::Start(options);
}

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::string& root_file,
                                                         const std::string& cert_file,
                                                         const std::string& key_file) {
  grpc::SslCredentialsOptions options;
  if (!root_file.empty()) options.pem_root_certs = testing::ReadTextFile(root_file);
  if (!cert_file.empty()) options.pem_cert_chain = testing::ReadTextFile(cert_file);
  if (!key_file.empty()) options.pem_private_key = testing::ReadTextFile(key_file);
  return grpc::SslCredentials(options);
}

std::shared_ptr<grpc::Channel> ChannelTo(
    const std::string& address, const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  return testing::MakeChannel(address, credentials);
}

grpc::Status ServerLive(const std::shared_ptr<grpc::Channel>& channel, const Metadata& metadata,
                        absl::Duration timeout) {
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  inference::ServerLiveRequest request;
  inference::ServerLiveResponse response;
  grpc::Status status = stub->ServerLive(&context, request, &response);
  if (status.ok() && !response.live()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "ServerLive answered live=false");
  }
  return status;
}

grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         const Metadata& metadata, bool* serving) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(absl::Seconds(10)));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  *serving = status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  return status;
}

grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& request, const Metadata& metadata,
                          std::string* response, absl::Duration timeout) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::CompletionQueue queue;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&context, method, request_buffer, &queue);
  call->StartCall();
  call->Finish(&response_buffer, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  response->clear();
  std::vector<grpc::Slice> slices;
  if (status.ok() && response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& piece : slices) {
      response->append(reinterpret_cast<const char*>(piece.begin()), piece.size());
    }
  }
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket() failed");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t got;
      while ((got = read(fd, buffer, sizeof(buffer))) > 0) answer.append(buffer, got);
    }
  }
  close(fd);
  const size_t body = answer.find("\r\n\r\n");
  if (body == std::string::npos) {
    return absl::UnavailableError(absl::StrCat("no HTTP answer from 127.0.0.1:", port));
  }
  return answer.substr(body + 4);
}

Exited RunServerToExit(std::vector<std::string> args) {
  testing::ScratchDir scratch;
  const auto port = testing::PickFreeLoopbackPort();
  EXPECT_TRUE(port.ok()) << port.status();
  const auto metrics_port = testing::PickFreeLoopbackPort();
  EXPECT_TRUE(metrics_port.ok()) << metrics_port.status();
  args.insert(args.begin(),
              {"--address", absl::StrCat("127.0.0.1:", port.value_or(1)), "--metrics-port",
               absl::StrCat(metrics_port.value_or(1)), "--backend", "cpu"});
  auto process = testing::ChildProcess::Spawn(ServerBinary(), args, scratch.File("log"));
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return {};
  auto exit_code = (*process)->WaitForExit(absl::Seconds(60));
  EXPECT_TRUE(exit_code.ok()) << exit_code.status() << "\n" << (*process)->LogTail();
  return {exit_code.value_or(-1), (*process)->ReadLog()};
}

}  // namespace moe::integration
