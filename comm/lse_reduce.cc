// LSE merge as an MPI reduction. Rows are packed into contiguous records of
// dim+1 floats (o then lse) so one MPI datatype describes a row; the user op
// recovers dim from MPI_Type_size of the datatype it is handed, so no
// datatype->dim registry is consulted inside the callback. Datatypes (one per
// dim) and the op are created once and cached; they free themselves from a
// delete callback on an MPI_COMM_SELF attribute, which MPI_Finalize runs first.
#include "comm/lse_reduce.h"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "comm/mpi.h"
#include "kernels/lse.h"
#include "spdlog/spdlog.h"

namespace headwise::comm {
namespace {

// inout[i] = in[i] (+) inout[i] for `*len` row records of type `*type`.
// Cannot report errors (MPI gives the op no way to); a datatype that is not a
// whole number of floats (never produced by this file) leaves inout as is.
void LseMergeOp(void* in, void* inout, int* len, MPI_Datatype* type) {
  int bytes = 0;
  if (MPI_Type_size(*type, &bytes) != MPI_SUCCESS || bytes < static_cast<int>(sizeof(float)) ||
      bytes % sizeof(float) != 0) {
    return;
  }
  const int64_t stride = bytes / static_cast<int64_t>(sizeof(float));
  const int64_t dim = stride - 1;
  const float* src = static_cast<const float*>(in);
  float* dst = static_cast<float*>(inout);
  for (int64_t i = 0; i < *len; ++i) {
    kernels::LseMerge(dst + i * stride, dst + i * stride + dim, src + i * stride,
                      src + i * stride + dim, 1, dim);
  }
}

// Process-wide cache of the op and per-dim row datatypes.
class LseMpiObjects {
 public:
  static LseMpiObjects& Get() {
    static LseMpiObjects* objects = new LseMpiObjects;  // never destroyed: used past exit()
    return *objects;
  }

  // The op and the row datatype for `dim`, created on first use.
  absl::Status Lookup(int64_t dim, MPI_Op* op, MPI_Datatype* row_type) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finalize_hook_set_) {
      // The attribute's delete callback runs at the start of MPI_Finalize,
      // while MPI objects can still be freed.
      int keyval = MPI_KEYVAL_INVALID;
      HEADWISE_MPI_RETURN_IF_ERROR(
          MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, &OnFinalize, &keyval, nullptr));
      HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, nullptr));
      HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_free_keyval(&keyval));  // attribute stays attached
      finalize_hook_set_ = true;
    }
    if (op_ == MPI_OP_NULL) {
      HEADWISE_MPI_RETURN_IF_ERROR(MPI_Op_create(&LseMergeOp, /*commute=*/1, &op_));
    }
    auto it = types_.find(dim);
    if (it == types_.end()) {
      MPI_Datatype type = MPI_DATATYPE_NULL;
      HEADWISE_MPI_RETURN_IF_ERROR(
          MPI_Type_contiguous(static_cast<int>(dim + 1), MPI_FLOAT, &type));
      if (const int rc = MPI_Type_commit(&type); rc != MPI_SUCCESS) {
        MPI_Type_free(&type);
        return MpiStatus(rc, "MPI_Type_commit");
      }
      it = types_.emplace(dim, type).first;
    }
    *op = op_;
    *row_type = it->second;
    return absl::OkStatus();
  }

 private:
  static int OnFinalize(MPI_Comm, int, void*, void*) {
    Get().FreeAll();
    return MPI_SUCCESS;
  }

  void FreeAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [dim, type] : types_) {
      if (absl::Status s = MpiStatus(MPI_Type_free(&type), "MPI_Type_free"); !s.ok()) {
        spdlog::error("LSE row type (dim {}): {}", dim, s.ToString());
      }
    }
    types_.clear();
    if (op_ != MPI_OP_NULL) {
      if (absl::Status s = MpiStatus(MPI_Op_free(&op_), "MPI_Op_free"); !s.ok()) {
        spdlog::error("LSE op: {}", s.ToString());
      }
      op_ = MPI_OP_NULL;
    }
    finalize_hook_set_ = false;
  }

  std::mutex mu_;
  bool finalize_hook_set_ ABSL_GUARDED_BY(mu_) = false;
  MPI_Op op_ ABSL_GUARDED_BY(mu_) = MPI_OP_NULL;
  std::map<int64_t, MPI_Datatype> types_ ABSL_GUARDED_BY(mu_);
};

absl::Status CheckArgs(const char* what, int64_t rows, int64_t dim) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": MPI is not running"));
  }
  if (rows < 0 || dim < 1 || dim >= INT_MAX || rows > INT_MAX ||
      rows * (dim + 1) > static_cast<int64_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rows=", rows, " dim=", dim,
                     " (need rows >= 0, dim >= 1, rows*(dim+1) <= ", INT_MAX, ")"));
  }
  return absl::OkStatus();
}

std::vector<float> Pack(const float* o, const float* lse, int64_t rows, int64_t dim) {
  std::vector<float> records(static_cast<size_t>(rows * (dim + 1)));
  for (int64_t r = 0; r < rows; ++r) {
    float* rec = records.data() + r * (dim + 1);
    std::copy(o + r * dim, o + (r + 1) * dim, rec);
    rec[dim] = lse[r];
  }
  return records;
}

void Unpack(const std::vector<float>& records, float* o, float* lse, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* rec = records.data() + r * (dim + 1);
    std::copy(rec, rec + dim, o + r * dim);
    lse[r] = rec[dim];
  }
}

}  // namespace

absl::Status LseAllreduce(float* o, float* lse, int64_t rows, int64_t dim, MPI_Comm comm) {
  if (absl::Status s = CheckArgs("LseAllreduce", rows, dim); !s.ok()) return s;
  if (rows == 0) return absl::OkStatus();
  MPI_Op op = MPI_OP_NULL;
  MPI_Datatype row_type = MPI_DATATYPE_NULL;
  if (absl::Status s = LseMpiObjects::Get().Lookup(dim, &op, &row_type); !s.ok()) return s;
  std::vector<float> records = Pack(o, lse, rows, dim);
  HEADWISE_MPI_RETURN_IF_ERROR(
      MPI_Allreduce(MPI_IN_PLACE, records.data(), static_cast<int>(rows), row_type, op, comm));
  Unpack(records, o, lse, rows, dim);
  return absl::OkStatus();
}

absl::Status LseReduce(float* o, float* lse, int64_t rows, int64_t dim, int root, MPI_Comm comm) {
  if (absl::Status s = CheckArgs("LseReduce", rows, dim); !s.ok()) return s;
  int rank = 0, size = 0;
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_rank(comm, &rank));
  HEADWISE_MPI_RETURN_IF_ERROR(MPI_Comm_size(comm, &size));
  if (root < 0 || root >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("LseReduce: root ", root, " is not a rank of a communicator of size ", size));
  }
  if (rows == 0) return absl::OkStatus();
  MPI_Op op = MPI_OP_NULL;
  MPI_Datatype row_type = MPI_DATATYPE_NULL;
  if (absl::Status s = LseMpiObjects::Get().Lookup(dim, &op, &row_type); !s.ok()) return s;
  std::vector<float> records = Pack(o, lse, rows, dim);
  if (rank == root) {
    HEADWISE_MPI_RETURN_IF_ERROR(
        MPI_Reduce(MPI_IN_PLACE, records.data(), static_cast<int>(rows), row_type, op, root, comm));
    Unpack(records, o, lse, rows, dim);
  } else {
    HEADWISE_MPI_RETURN_IF_ERROR(
        MPI_Reduce(records.data(), nullptr, static_cast<int>(rows), row_type, op, root, comm));
  }
  return absl::OkStatus();
}

}  // namespace headwise::comm
