// Fuzzes decoding of every headwise.v1.Inference request message from wire
// bytes, followed by the server's request validation (runtime/service/server.h)
// exactly as the RPC handlers run it. The first byte picks the message; for
// OpenSession the rest is a stream of parts, each a 2-byte little-endian length
// and that many bytes. Invariants: a request the validation accepts yields
// options the sampler and engine accept (ValidateSamplingParams, max_tokens,
// token ids in the vocabulary), and a decoded message re-encodes and decodes
// to itself.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "headwise/v1/inference.pb.h"
#include "runtime/model/sampler.h"
#include "runtime/service/server.h"

namespace {

namespace v1 = ::headwise::v1;
using headwise::engine::RequestOptions;

constexpr int64_t kVocabSize = 49152;  // SmolLM2's

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "request_fuzzer: invariant violated: %s\n", what);
    std::abort();
  }
}

// Options the handlers pass on must be ones the engine accepts.
void CheckOptions(const absl::StatusOr<RequestOptions>& options) {
  if (!options.ok()) {
    Check(absl::IsInvalidArgument(options.status()) || absl::IsUnimplemented(options.status()),
          "validation failed with a code other than INVALID_ARGUMENT or UNIMPLEMENTED");
    return;
  }
  Check(headwise::model::ValidateSamplingParams(options->sampling).ok(),
        "validation accepted sampling params the sampler rejects");
  Check(options->max_tokens > 0 && options->max_tokens <= (1 << 24), "max_tokens out of range");
  for (const std::string& stop : options->stop) Check(!stop.empty(), "an empty stop string");
  Check(!options->policy || options->policy->Validate().ok(),
        "validation accepted a policy the store rejects");
}

// Wire bytes with map entries in key order, so equal messages compare equal.
std::string Deterministic(const google::protobuf::Message& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    Check(message.SerializeToCodedStream(&coded), "a parsed message does not serialize");
  }
  return out;
}

// Parses `bytes` as T; a message that parses must survive a round trip.
template <typename T>
bool Parse(std::string_view bytes, T& message) {
  if (!message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  const std::string wire = Deterministic(message);
  T again;
  Check(again.ParseFromString(wire), "a re-serialized message does not parse");
  Check(Deterministic(again) == wire, "a message does not survive a round trip");
  return true;
}

void FuzzGenerate(std::string_view bytes) {
  v1::GenerateRequest request;
  if (!Parse(bytes, request)) return;
  const absl::StatusOr<RequestOptions> options =
      headwise::service::ValidateGenerateRequest(request, kVocabSize);
  CheckOptions(options);
  if (!options.ok()) return;
  switch (request.input_case()) {
    case v1::GenerateRequest::kChat:
      Check(!request.chat().messages().empty(), "accepted an empty chat");
      for (const v1::ChatMessage& m : request.chat().messages()) {
        Check(!m.role().empty(), "accepted a chat message without a role");
      }
      break;
    case v1::GenerateRequest::kTokenIds:
      for (int32_t id : request.token_ids().ids()) {
        Check(id >= 0 && id < kVocabSize, "accepted a token id outside the vocabulary");
      }
      break;
    case v1::GenerateRequest::kText:
      break;
    default:
      Check(false, "accepted a request without input");
  }
}

void FuzzOpenSession(std::string_view bytes) {
  // context_path parts read a fake file: some paths fail as the engine's would.
  headwise::service::OpenSessionContext context([](const std::string& path) {
    if (path.empty() || path.find("..") != std::string::npos) {
      return absl::StatusOr<std::string>(absl::InvalidArgumentError("bad path"));
    }
    return absl::StatusOr<std::string>("file:" + path);
  });
  bool saw_path = false, saw_chunk = false;
  while (!bytes.empty()) {
    size_t length = static_cast<uint8_t>(bytes[0]);
    if (bytes.size() >= 2) length |= static_cast<size_t>(static_cast<uint8_t>(bytes[1])) << 8;
    bytes.remove_prefix(std::min<size_t>(2, bytes.size()));
    const std::string_view part_bytes = bytes.substr(0, length);
    bytes.remove_prefix(part_bytes.size());
    v1::OpenSessionRequest part;
    if (!Parse(part_bytes, part)) return;  // the stream fails to decode: the RPC ends
    const absl::Status status = context.Add(part);
    if (!status.ok()) {
      Check(absl::IsInvalidArgument(status) || absl::IsUnimplemented(status),
            "OpenSession failed with a code other than INVALID_ARGUMENT or UNIMPLEMENTED");
      return;
    }
    saw_path |= part.source_case() == v1::OpenSessionRequest::kContextPath;
    saw_chunk |= part.source_case() == v1::OpenSessionRequest::kContextChunk &&
                 !part.context_chunk().empty();
    Check(!context.policy() || context.policy()->Validate().ok(),
          "OpenSession accepted a policy the store rejects");
  }
  Check(!(saw_path && saw_chunk), "OpenSession accepted both a path and chunks");
  CheckOptions(headwise::service::RequestOptionsFrom(v1::SamplingParams(), v1::Policy()));
}

void FuzzAsk(std::string_view bytes) {
  v1::AskRequest request;
  if (!Parse(bytes, request)) return;
  CheckOptions(headwise::service::ValidateAskRequest(request));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs every string field with invalid UTF-8 it rejects; the
  // rejection is what matters here, and the log would drown libFuzzer's.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 8) {
    case 0:
      FuzzGenerate(bytes);
      break;
    case 1:
      FuzzOpenSession(bytes);
      break;
    case 2:
      FuzzAsk(bytes);
      break;
    case 3: {
      // Handed to the engine as is (it looks the id up); decoding is the surface.
      v1::CloseSessionRequest request;
      Parse(bytes, request);
      break;
    }
    case 4: {
      v1::ListSessionsRequest request;
      Parse(bytes, request);
      break;
    }
    case 5: {
      v1::GetModelInfoRequest request;
      Parse(bytes, request);
      break;
    }
    case 6: {
      v1::GetClusterStatsRequest request;
      Parse(bytes, request);
      break;
    }
    default: {
      // The sampling block alone, with each policy name the server knows.
      v1::SamplingParams sampling;
      if (!Parse(bytes, sampling)) break;
      for (const char* name : {"", "exact", "hybrid", "quantkv", "bogus"}) {
        v1::Policy policy;
        policy.set_name(name);
        CheckOptions(headwise::service::RequestOptionsFrom(sampling, policy));
        // Every knob, with the sampling block's stop strings as values.
        for (const char* key : {"budget", "tau", "top_k", "token_top_k", "key_bits", "window",
                                "sinks", "summary", "pool_heads", "x"}) {
          for (const std::string& value : sampling.stop()) {
            (*policy.mutable_params())[key] = value;
            CheckOptions(headwise::service::RequestOptionsFrom(sampling, policy));
          }
        }
      }
      break;
    }
  }
  return 0;
}
