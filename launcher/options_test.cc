#include "launcher/options.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::launcher {
namespace {

TEST(ParseBytesTest, AcceptsUnits) {
  EXPECT_EQ(*ParseBytes("4096"), 4096u);
  EXPECT_EQ(*ParseBytes("64KiB"), 64u * 1024);
  EXPECT_EQ(*ParseBytes("16 MiB"), 16u << 20);
  EXPECT_EQ(*ParseBytes("1.5GiB"), 3u << 29);
  EXPECT_EQ(*ParseBytes("2g"), 2ull << 30);
  EXPECT_EQ(*ParseBytes("1TiB"), 1ull << 40);
}

TEST(ParseBytesTest, RejectsGarbageWithAClearMessage) {
  EXPECT_THAT(ParseBytes("lots").status().message(), ::testing::HasSubstr("not a size"));
  EXPECT_THAT(ParseBytes("12 parsecs").status().message(), ::testing::HasSubstr("unit 'parsecs'"));
  EXPECT_FALSE(ParseBytes("").ok());
  EXPECT_FALSE(ParseBytes("-5MiB").ok());
  EXPECT_FALSE(ParseBytes("99999999999TiB").ok());
}

TEST(EnvTwinTest, UpperCasesAndUnderscores) {
  EXPECT_EQ(EnvTwin("kv-block"), "HEADWISE_KV_BLOCK");
  EXPECT_EQ(EnvTwin("device-mem"), "HEADWISE_DEVICE_MEM");
}

}  // namespace
}  // namespace headwise::launcher

namespace headwise::launcher {
namespace {

TEST(AddEnvTwinsTest, EnvironmentFillsFlagsAndTheFlagWins) {
  CLI::App app;
  int block = 0;
  std::string dtype;
  app.add_option("--kv-block", block);
  app.add_option("--kv-dtype", dtype);
  AddEnvTwins(app);
  setenv("HEADWISE_KV_BLOCK", "64", 1);
  setenv("HEADWISE_KV_DTYPE", "bf16", 1);
  const char* argv[] = {"prog", "--kv-dtype", "f16"};
  app.parse(3, const_cast<char**>(argv));
  EXPECT_EQ(block, 64);
  EXPECT_EQ(dtype, "f16");
  unsetenv("HEADWISE_KV_BLOCK");
  unsetenv("HEADWISE_KV_DTYPE");
}

}  // namespace
}  // namespace headwise::launcher
