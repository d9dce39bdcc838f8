// The generated messages and stubs link, and a request survives the wire.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "headwise/v1/inference.grpc.pb.h"
#include "headwise/v1/inference.pb.h"

namespace headwise::v1 {
namespace {

TEST(InferenceProtoTest, GenerateRequestRoundTrips) {
  GenerateRequest request;
  ChatMessage* message = request.mutable_chat()->add_messages();
  message->set_role("user");
  message->set_content("What is the capital of France? \xc3\xa9\xe4\xb8\xad");
  SamplingParams* sampling = request.mutable_sampling();
  sampling->set_max_tokens(32);
  sampling->set_temperature(0.7f);
  sampling->set_top_k(40);
  sampling->set_seed(1234567890123ULL);
  sampling->add_stop("\n\n");
  sampling->add_stop_token_ids(2);
  request.mutable_policy()->set_name("hybrid");
  (*request.mutable_policy()->mutable_params())["window"] = "1024";

  std::string wire;
  ASSERT_TRUE(request.SerializeToString(&wire));
  GenerateRequest decoded;
  ASSERT_TRUE(decoded.ParseFromString(wire));

  EXPECT_EQ(decoded.input_case(), GenerateRequest::kChat);
  ASSERT_EQ(decoded.chat().messages_size(), 1);
  EXPECT_EQ(decoded.chat().messages(0).content(), message->content());
  EXPECT_EQ(decoded.sampling().max_tokens(), 32u);
  EXPECT_FLOAT_EQ(decoded.sampling().temperature(), 0.7f);
  EXPECT_EQ(decoded.sampling().seed(), 1234567890123ULL);
  EXPECT_THAT(decoded.sampling().stop(), ::testing::ElementsAre("\n\n"));
  EXPECT_EQ(decoded.policy().params().at("window"), "1024");
  EXPECT_EQ(decoded.SerializeAsString(), wire);
}

TEST(InferenceProtoTest, TruncatedBytesDoNotParse) {
  GenerateRequest request;
  request.set_text(std::string(300, 'x'));
  std::string wire = request.SerializeAsString();
  GenerateRequest decoded;
  EXPECT_FALSE(decoded.ParseFromString(wire.substr(0, wire.size() / 2)));
}

TEST(InferenceProtoTest, ServiceHasEveryMethod) {
  static_assert(sizeof(Inference::Service) > 0 && sizeof(Inference::Stub) > 0);
  const auto* service = GenerateRequest::descriptor()->file()->FindServiceByName("Inference");
  ASSERT_NE(service, nullptr);
  for (const char* name : {"Generate", "OpenSession", "Ask", "CloseSession", "ListSessions",
                           "GetModelInfo", "GetClusterStats"}) {
    EXPECT_NE(service->FindMethodByName(name), nullptr) << name;
  }
}

}  // namespace
}  // namespace headwise::v1
