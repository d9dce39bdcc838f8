// KvStore's block record, shared by the store's two source files
// (kv_store.cc, kv_store_snapshot.cc); not part of the store's interface.
#pragma once

#include "runtime/kv/kv_store.h"

namespace headwise::kv {

struct KvStore::Block {
  Tier tier = Tier::kDevice;
  uint8_t* data = nullptr;  // K then V, where the block can be read now
  int32_t n_tokens = 0;
  device::DeviceBuffer device_buffer;  // while on the device
  uint8_t* host = nullptr;             // once it has a host block (owned by the pool)
  device::CopyTicket copy_home = 0;    // ToHost copy in flight
  // Placed blocks: the rank, its pool there (host or disk) and the slot in
  // it. Remote host homes have a put in flight (from `host`, which is
  // released once it landed). Blocks on this rank's disk have tier kDisk.
  int32_t rank = 0;
  cluster::PoolTier pool = cluster::PoolTier::kHost;
  int64_t slot = -1;
  comm::RmaTicket put = 0;
};

}  // namespace headwise::kv
