#include "launcher/mpirun_command.h"

#include <algorithm>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace headwise::launcher {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

LaunchSpec Spec() {
  LaunchSpec spec;
  spec.np = 3;
  spec.headwise = "/opt/headwise/bin/headwise";
  spec.command = {"serve", "--listen", "0.0.0.0:50051"};
  return spec;
}

TEST(ParseHostsTest, NamesAndSlots) {
  absl::StatusOr<std::vector<HostSlots>> hosts = ParseHosts("h1:2,node-7.cluster,10.0.0.3:16");
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 3u);
  EXPECT_EQ((*hosts)[0].name, "h1");
  EXPECT_EQ((*hosts)[0].slots, 2);
  EXPECT_EQ((*hosts)[1].name, "node-7.cluster");
  EXPECT_EQ((*hosts)[1].slots, 0);
  EXPECT_EQ((*hosts)[2].name, "10.0.0.3");
  EXPECT_EQ((*hosts)[2].slots, 16);
}

TEST(ParseHostsTest, RejectsBadEntriesNamingThem) {
  EXPECT_THAT(ParseHosts("h1:two").status().message(), HasSubstr("slots 'two' of host 'h1'"));
  EXPECT_THAT(ParseHosts("h1:0").status().message(), HasSubstr("not a positive integer"));
  EXPECT_THAT(ParseHosts("h1:-1").status().message(), HasSubstr("slots '-1'"));
  EXPECT_THAT(ParseHosts("h1:").status().message(), HasSubstr("slots ''"));
  EXPECT_THAT(ParseHosts("h1,,h2").status().message(), HasSubstr("entry ''"));
  EXPECT_THAT(ParseHosts("h 1").status().message(), HasSubstr("entry 'h 1'"));
  EXPECT_THAT(ParseHosts(":4").status().message(), HasSubstr("not name[:slots]"));
  EXPECT_FALSE(ParseHosts("").ok());
  EXPECT_FALSE(ParseHosts("h1:2:3").ok());
  EXPECT_EQ(ParseHosts("h1:x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BuildMpirunArgvTest, FullCommand) {
  LaunchSpec spec = Spec();
  spec.hosts = *ParseHosts("h1:2,h2:1");
  spec.run_as_root = true;
  spec.ucx_tls = "tcp,self";
  spec.ucx_net_devices = "eth0";
  spec.forwarded_env = {"HEADWISE_HOST_MEM", "HEADWISE_MODEL"};
  absl::StatusOr<std::vector<std::string>> argv = BuildMpirunArgv(spec);
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_THAT(
      *argv, ElementsAre("mpirun", "--allow-run-as-root", "--host", "h1:2,h2:1", "-np", "3",
                         "--mca", "pml", "ob1", "--bind-to", "none", "-x", "UCX_TLS=tcp,self", "-x",
                         "UCX_NET_DEVICES=eth0", "-x", "HEADWISE_HOST_MEM", "-x", "HEADWISE_MODEL",
                         "/opt/headwise/bin/headwise", "serve", "--listen", "0.0.0.0:50051"));
}

TEST(BuildMpirunArgvTest, MinimalCommandLeavesHostsToMpirun) {
  LaunchSpec spec = Spec();
  spec.mpirun = "/usr/local/bin/mpirun";
  absl::StatusOr<std::vector<std::string>> argv = BuildMpirunArgv(spec);
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_THAT(*argv, ElementsAre("/usr/local/bin/mpirun", "-np", "3", "--mca", "pml", "ob1",
                                 "--bind-to", "none", "/opt/headwise/bin/headwise", "serve",
                                 "--listen", "0.0.0.0:50051"));
}

TEST(BuildMpirunArgvTest, OversubscribesOnlyPastTheListedSlots) {
  auto has_oversubscribe = [](const LaunchSpec& spec) {
    std::vector<std::string> argv = *BuildMpirunArgv(spec);
    return std::count(argv.begin(), argv.end(), "--oversubscribe");
  };
  LaunchSpec spec = Spec();
  spec.hosts = *ParseHosts("h1:2,h2:1");  // 3 slots, 3 ranks
  EXPECT_EQ(has_oversubscribe(spec), 0);
  spec.np = 4;
  EXPECT_EQ(has_oversubscribe(spec), 1);
  spec.hosts = *ParseHosts("h1,h2,h3");  // no :slots counts one each
  spec.np = 3;
  EXPECT_EQ(has_oversubscribe(spec), 0);
  spec.hosts = *ParseHosts("localhost");
  EXPECT_EQ(has_oversubscribe(spec), 1);
  spec.oversubscribe = true;  // forced: still once
  EXPECT_EQ(has_oversubscribe(spec), 1);
  spec.hosts.clear();
  EXPECT_EQ(has_oversubscribe(spec), 1);
  spec.oversubscribe = false;  // no hosts: mpirun knows the slots
  EXPECT_EQ(has_oversubscribe(spec), 0);
}

TEST(BuildMpirunArgvTest, Hostfile) {
  LaunchSpec spec = Spec();
  spec.hostfile = "/etc/hosts.mpi";
  std::vector<std::string> argv = *BuildMpirunArgv(spec);
  EXPECT_THAT(std::vector<std::string>(argv.begin() + 1, argv.begin() + 3),
              ElementsAre("--hostfile", "/etc/hosts.mpi"));
  spec.hosts = *ParseHosts("h1");
  EXPECT_THAT(BuildMpirunArgv(spec).status().message(), HasSubstr("exclude each other"));
}

TEST(BuildMpirunArgvTest, RejectsBadSpecs) {
  LaunchSpec spec = Spec();
  spec.np = 0;
  EXPECT_THAT(BuildMpirunArgv(spec).status().message(), HasSubstr("-np 0: need at least 1"));
  spec = Spec();
  spec.command.clear();
  EXPECT_THAT(BuildMpirunArgv(spec).status().message(), HasSubstr("after `--`"));
  spec.command = {"launch", "-np", "2"};
  EXPECT_THAT(BuildMpirunArgv(spec).status().message(), HasSubstr("`launch` itself"));
  spec = Spec();
  spec.headwise.clear();
  EXPECT_EQ(BuildMpirunArgv(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ForwardedEnvTest, HeadwiseVariablesAndUcxUnlessGivenAsFlags) {
  const char* envp[] = {"PATH=/usr/bin",
                        "HEADWISE_MODEL=/m/a b.gguf",
                        "HEADWISE_=x",
                        "UCX_TLS=tcp",
                        "UCX_NET_DEVICES=eth0",
                        "UCX_RNDV_THRESH=8k",
                        "HEADWISE_HOST_MEM=8GiB",
                        "NOTHEADWISE_X=1",
                        nullptr};
  EXPECT_THAT(ForwardedEnv(envp, false, false),
              ElementsAre("HEADWISE_HOST_MEM", "HEADWISE_MODEL", "UCX_NET_DEVICES", "UCX_TLS"));
  EXPECT_THAT(ForwardedEnv(envp, true, true), ElementsAre("HEADWISE_HOST_MEM", "HEADWISE_MODEL"));
  EXPECT_TRUE(ForwardedEnv(nullptr, false, false).empty());
}

TEST(ShellQuoteTest, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(ShellQuote("serve"), "serve");
  EXPECT_EQ(ShellQuote("UCX_TLS=tcp,self"), "UCX_TLS=tcp,self");
  EXPECT_EQ(ShellQuote("/a/b-c.gguf"), "/a/b-c.gguf");
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("$HOME"), "'$HOME'");
  EXPECT_EQ(ShellJoin({"mpirun", "-np", "2", "What is it?"}), "mpirun -np 2 'What is it?'");
}

TEST(RewriteLaunchNpTest, OnlyLaunchFlagsBeforeTheSeparator) {
  std::vector<std::string> args = {"launch", "-np", "3", "--dry-run", "--", "serve", "-np"};
  RewriteLaunchNp(args);
  EXPECT_THAT(args, ElementsAre("launch", "--np", "3", "--dry-run", "--", "serve", "-np"));
  args = {"launch", "-np=2", "--", "serve"};
  RewriteLaunchNp(args);
  EXPECT_EQ(args[1], "--np=2");
  args = {"generate", "-p", "launch", "-np"};
  RewriteLaunchNp(args);
  EXPECT_EQ(args[3], "-np");
}

}  // namespace
}  // namespace headwise::launcher
