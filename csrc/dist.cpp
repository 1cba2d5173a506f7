// Data parallelism on torch.distributed's own engine (c10d), which tch does not expose: a
// TCPStore rendezvous, ProcessGroupGloo for CPU tensors and, when compiled with
// STEPTUNE_NCCL, ProcessGroupNCCL for CUDA tensors. src/dist.rs is the only caller.
//
// Every rank also runs a heartbeat thread that publishes "<unix ms>|<what this rank is doing>" to
// the store once a second, so that when a collective fails the survivors can say which rank died
// or hung, and where it was (steptune_dist_peer_report).
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef STEPTUNE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <c10/util/Logging.h>

#include "ffi_common.h"

using steptune::guarded;

namespace {

using Millis = std::chrono::milliseconds;

int64_t unix_ms() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

}  // namespace

/// One process group and the store it met through. Owned by src/dist.rs (`World`).
struct SteptuneGroup {
  int rank = 0;
  int size = 1;
  Millis timeout{1800 * 1000};
  bool nccl = false;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;

  // The heartbeat: its own store connection (TCPStore clients are not shared across threads).
  c10::intrusive_ptr<c10d::Store> heartbeat_store;
  std::thread heartbeat;
  std::mutex mutex;
  std::condition_variable wake;
  std::string activity = "starting";
  bool changed = false;
  bool stopping = false;

  /// Once a second, and soon after the activity changes (at most ten times a second).
  void beat() {
    std::unique_lock<std::mutex> lock(mutex);
    while (!stopping) {
      std::string value = std::to_string(unix_ms()) + "|" + activity;
      changed = false;
      lock.unlock();
      try {
        heartbeat_store->set("hb/" + std::to_string(rank), bytes_of(value));
      } catch (...) {
        // The store is gone (its host died): the next collective reports it; nothing to do here.
        return;
      }
      lock.lock();
      wake.wait_for(lock, Millis(100), [this] { return stopping; });
      wake.wait_for(lock, Millis(900), [this] { return stopping || changed; });
    }
  }
};

namespace {

void run_work(SteptuneGroup* g, const c10::intrusive_ptr<c10d::Work>& work) {
  // Gloo honours the timeout of its options; wait() bounds NCCL too.
  work->wait(g->timeout);
}

/// Ends the heartbeat with a last word peers will read ("finished", or the failure).
void stop_heartbeat(SteptuneGroup* g, const std::string& last_word) {
  {
    std::lock_guard<std::mutex> lock(g->mutex);
    if (g->stopping) return;
    g->stopping = true;
  }
  g->wake.notify_all();
  if (g->heartbeat.joinable()) g->heartbeat.join();
  try {
    g->heartbeat_store->setTimeout(Millis(3000));
    g->heartbeat_store->set("hb/" + std::to_string(g->rank), bytes_of(std::to_string(unix_ms()) + "|" + last_word));
  } catch (...) {
  }
}

std::string peer_report(SteptuneGroup* g, const std::string& failed, int64_t settle_ms) {
  std::string doing;
  {
    std::lock_guard<std::mutex> lock(g->mutex);
    doing = g->activity;
  }
  // The store's own warnings about the lost connection would drown the report.
  FLAGS_caffe2_log_level = 2;
  stop_heartbeat(g, "stopped with an error (" + failed + ") while " + doing);
  // Peers that died stop beating: wait a few beats, then read everyone's last one. The store
  // connection is the heartbeat's own (a fresh one would wait out the whole timeout to connect
  // when the store's host is gone).
  std::this_thread::sleep_for(Millis(settle_ms));
  std::ostringstream out;
  try {
    auto& store = g->heartbeat_store;
    const int64_t now = unix_ms();
    for (int r = 0; r < g->size; ++r) {
      if (r == g->rank) continue;
      const std::string key = "hb/" + std::to_string(r);
      if (!store->check({key})) {
        out << "  rank " << r << ": never reported (it did not start, or died at start-up)\n";
        continue;
      }
      auto v = store->get(key);
      std::string s(v.begin(), v.end());
      auto bar = s.find('|');
      const int64_t at = bar == std::string::npos ? 0 : std::stoll(s.substr(0, bar));
      const std::string what = bar == std::string::npos ? s : s.substr(bar + 1);
      const int64_t age = (now - at) / 1000;
      if (what == "finished" || what.rfind("stopped with an error", 0) == 0) {
        out << "  rank " << r << ": " << what << "\n";
      } else if (age >= 3) {
        out << "  rank " << r << ": DIED or was stopped: no heartbeat for " << age << " s; its last heartbeat said: " << what << "\n";
      } else {
        out << "  rank " << r << ": alive, " << what << "\n";
      }
    }
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    out << "  the rendezvous store is unreachable (" << (c10_error ? c10_error->what_without_backtrace() : e.what())
        << "): rank 0 hosts it unless torchrun's agent does, so rank 0 has most likely died\n";
  }
  return out.str();
}

}  // namespace

extern "C" {

/// Meets the other ranks at `host:port` (a TCPStore: served by rank 0 unless `agent_store`, when
/// torchrun's agent already serves it), then builds the process group: Gloo (`backend` 0) or
/// NCCL (`backend` 1, on CUDA device `device_index`). `prefix` namespaces the keys.
int steptune_dist_init(const char* host, int port, int rank, int size, int agent_store, int64_t timeout_ms,
                       int backend, int device_index, const char* prefix, SteptuneGroup** out) {
  return guarded([&] {
    auto g = std::make_unique<SteptuneGroup>();
    g->rank = rank;
    g->size = size;
    g->timeout = Millis(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0 && !agent_store;
    opts.numWorkers = size;
    opts.waitWorkers = true;
    opts.timeout = g->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    g->store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    g->heartbeat_store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp->clone());
    if (backend == 0) {
      auto options = c10d::ProcessGroupGloo::Options::create_default(g->timeout);
      const std::string h(host);
      if (std::getenv("GLOO_SOCKET_IFNAME") == nullptr && (h == "localhost" || h.rfind("127.", 0) == 0)) {
        // One machine: bind where every rank can reach, whatever the hostname resolves to.
        options->devices = {c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")};
      }
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, size, options);
    } else {
#ifdef STEPTUNE_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = g->timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, size, options);
      const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
      nccl->setBoundDeviceId(device);
      nccl->eagerConnectSingleDevice(device);
      g->backend = nccl;
      g->nccl = true;
#else
      TORCH_CHECK(false, "this steptune was built without NCCL: build it with --features cuda against the CUDA libtorch "
                         "(./libtorch-setup.sh cuda), or set training.ddp_backend: gloo");
#endif
    }
    SteptuneGroup* raw = g.get();
    raw->heartbeat = std::thread([raw] { raw->beat(); });
    *out = g.release();
  });
}

/// Sums `t` over every rank, in place (a dense contiguous tensor on the group's device).
int steptune_dist_all_reduce_sum(SteptuneGroup* g, torch::Tensor* t) {
  return guarded([&] {
    std::vector<at::Tensor> ts{*t};
    run_work(g, g->backend->allreduce(ts, c10d::AllreduceOptions()));
  });
}

/// Overwrites `t` on every rank with rank `root`'s.
int steptune_dist_broadcast(SteptuneGroup* g, torch::Tensor* t, int root) {
  return guarded([&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    run_work(g, g->backend->broadcast(ts, opts));
  });
}

int steptune_dist_barrier(SteptuneGroup* g) {
  return guarded([&] { run_work(g, g->backend->barrier(c10d::BarrierOptions())); });
}

/// What this rank is doing now, published with its next heartbeat.
void steptune_dist_set_activity(SteptuneGroup* g, const char* what) {
  try {
    {
      std::lock_guard<std::mutex> lock(g->mutex);
      g->activity = what;
      g->changed = true;
    }
    g->wake.notify_all();
  } catch (...) {
    // Out of memory for a status line: the heartbeat keeps the previous one.
  }
}

/// After a failed collective (`failed` says which): stops this rank's heartbeat with that news,
/// then every other rank's state from its last heartbeat, one line each. The string is
/// malloc'ed; free it with steptune_dist_free_string.
char* steptune_dist_peer_report(SteptuneGroup* g, const char* failed, int64_t settle_ms) {
  std::string s;
  try {
    s = peer_report(g, failed, settle_ms);
  } catch (...) {
    s = "no report: the store could not be read\n";
  }
  return strdup(s.c_str());
}

void steptune_dist_free_string(char* s) { free(s); }

/// Stops the heartbeat and frees the group. After a failed collective the group may be wedged
/// (a peer is gone): `healthy` 0 then leaks the backend rather than block in its destructor.
void steptune_dist_free(SteptuneGroup* g, int healthy) {
  std::string last;
  {
    std::lock_guard<std::mutex> lock(g->mutex);
    last = g->activity;
  }
  stop_heartbeat(g, healthy ? "finished" : (last.rfind("stopped with an error", 0) == 0 ? last : "stopped with an error"));
  if (!healthy) {
    // Leak on purpose: the process is about to exit with an error.
    return;
  }
  try {
#ifdef STEPTUNE_NCCL
    if (g->nccl) g->backend->shutdown();
#endif
    delete g;
  } catch (...) {
  }
}

}  // extern "C"
