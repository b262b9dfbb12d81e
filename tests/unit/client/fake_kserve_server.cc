#include "tests/unit/client/fake_kserve_server.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moe::client::testing {

class FakeKServeServer::KServeService final : public inference::GRPCInferenceService::Service {
 public:
  explicit KServeService(FakeKServeServer& owner) : owner_(owner) {}

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* response) override {
    grpc::Status status = owner_.Arrived("ServerLive", context);
    if (status.ok()) response->set_live(true);
    return status;
  }

  grpc::Status ServerReady(grpc::ServerContext* context, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* response) override {
    grpc::Status status = owner_.Arrived("ServerReady", context);
    if (status.ok()) response->set_ready(true);
    return status;
  }

  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override {
    grpc::Status status = owner_.Arrived("ModelReady", context);
    if (!status.ok()) return status;
    if (request->name() != "fake") return UnknownModel(request->name());
    response->set_ready(true);
    return grpc::Status::OK;
  }

  grpc::Status ModelMetadata(grpc::ServerContext* context,
                             const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override {
    grpc::Status status = owner_.Arrived("ModelMetadata", context);
    if (!status.ok()) return status;
    if (request->name() != "fake") return UnknownModel(request->name());
    response->set_name("fake");
    response->add_versions(std::string("1"));  // (const char*: a GCC 12 -Wrestrict false alarm)
    auto* input = response->add_inputs();
    input->set_name("x");
    input->set_datatype("FP32");
    input->add_shape(-1);
    input->add_shape(3);
    auto* output = response->add_outputs();
    output->set_name("y");
    output->set_datatype("FP32");
    output->add_shape(-1);
    output->add_shape(2);
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override {
    owner_.SetLastInferRequest(*request);
    grpc::Status status = owner_.Arrived("ModelInfer", context);
    if (!status.ok()) return status;
    if (request->model_name() != "fake") return UnknownModel(request->model_name());
    if (request->inputs_size() != 1 || request->inputs(0).datatype() != "FP32" ||
        request->inputs(0).shape_size() != 2 || request->inputs(0).shape(1) != 3) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "fake wants one FP32 [rows, 3]");
    }
    const int64_t rows = request->inputs(0).shape(0);
    const bool raw = request->raw_input_contents_size() > 0;
    std::vector<float> values(rows * 3);
    if (raw) {
      if (request->raw_input_contents(0).size() != values.size() * 4) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "raw size");
      }
      std::memcpy(values.data(), request->raw_input_contents(0).data(), values.size() * 4);
    } else {
      const auto& typed = request->inputs(0).contents().fp32_contents();
      if (static_cast<size_t>(typed.size()) != values.size()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "typed size");
      }
      values.assign(typed.begin(), typed.end());
    }
    response->set_model_name("fake");
    response->set_id(request->id());
    (*response->mutable_parameters())["queue_us"].set_int64_param(7);
    auto* output = response->add_outputs();
    output->set_name("y");
    output->set_datatype("FP32");
    output->add_shape(rows);
    output->add_shape(2);
    std::vector<float> y;
    for (int64_t row = 0; row < rows; ++row) {
      y.push_back(values[row * 3]);
      y.push_back(values[row * 3 + 1]);
    }
    if (raw) {
      response->add_raw_output_contents(
          std::string(reinterpret_cast<const char*>(y.data()), y.size() * 4));
    } else {
      output->mutable_contents()->mutable_fp32_contents()->Add(y.begin(), y.end());
    }
    return grpc::Status::OK;
  }

 private:
  static grpc::Status UnknownModel(const std::string& name) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no model named '", name, "'"));
  }

  FakeKServeServer& owner_;
};

class FakeKServeServer::MoEService final : public moe::v1::MoEService::Service {
 public:
  explicit MoEService(FakeKServeServer& owner) : owner_(owner) {}

  grpc::Status GetModelInfo(grpc::ServerContext* context,
                            const moe::v1::GetModelInfoRequest* request,
                            moe::v1::ModelInfo* response) override {
    grpc::Status status = owner_.Arrived("GetModelInfo", context);
    if (!status.ok()) return status;
    response->set_name(request->name());
    response->set_architecture("FakeArch");
    return grpc::Status::OK;
  }

 private:
  FakeKServeServer& owner_;
};

std::unique_ptr<FakeKServeServer> FakeKServeServer::Start(const Options& options) {
  std::unique_ptr<FakeKServeServer> server(new FakeKServeServer());
  server->kserve_ = std::make_unique<KServeService>(*server);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      "127.0.0.1:0",
      options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
      &server->port_);
  builder.RegisterService(server->kserve_.get());
  if (options.serve_moe_v1) {
    server->moe_ = std::make_unique<MoEService>(*server);
    builder.RegisterService(server->moe_.get());
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    ADD_FAILURE() << "the fake KServe server did not start";
    return nullptr;
  }
  server->address_ = absl::StrCat("127.0.0.1:", server->port_);
  return server;
}

FakeKServeServer::~FakeKServeServer() {
  if (server_ != nullptr) server_->Shutdown();
}

void FakeKServeServer::FailNext(const std::string& rpc, std::vector<grpc::Status> statuses) {
  absl::MutexLock lock(&mutex_);
  auto& queue = fail_next_[rpc];
  queue.insert(queue.end(), statuses.begin(), statuses.end());
}

void FakeKServeServer::FailAlways(const std::string& rpc, grpc::Status status) {
  absl::MutexLock lock(&mutex_);
  fail_always_[rpc] = std::move(status);
}

int FakeKServeServer::calls(const std::string& rpc) const {
  absl::MutexLock lock(&mutex_);
  auto it = calls_.find(rpc);
  return it == calls_.end() ? 0 : it->second;
}

std::vector<std::string> FakeKServeServer::authorizations() const {
  absl::MutexLock lock(&mutex_);
  return authorizations_;
}

inference::ModelInferRequest FakeKServeServer::last_infer_request() const {
  absl::MutexLock lock(&mutex_);
  return last_infer_request_;
}

grpc::Status FakeKServeServer::Arrived(const std::string& rpc, grpc::ServerContext* context) {
  absl::MutexLock lock(&mutex_);
  ++calls_[rpc];
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  authorizations_.push_back(
      it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size()));
  if (auto always = fail_always_.find(rpc); always != fail_always_.end()) return always->second;
  auto& queue = fail_next_[rpc];
  if (!queue.empty()) {
    grpc::Status status = queue.front();
    queue.pop_front();
    return status;
  }
  return grpc::Status::OK;
}

void FakeKServeServer::SetLastInferRequest(const inference::ModelInferRequest& request) {
  absl::MutexLock lock(&mutex_);
  last_infer_request_ = request;
}

}  // namespace moe::client::testing
