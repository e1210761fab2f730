// Data parallelism on c10d, the layer under torch.distributed: a TCPStore
// for the rendezvous and a Gloo (or NCCL) process group for the collectives.
// It is compiled for real only where CMake found c10d's Gloo headers and a
// libtorch that links them (LT_WITH_GLOO); elsewhere every call returns an
// error that says how to get them, so the rest of the shim builds anyway.
#include "common.h"

#ifdef LT_WITH_GLOO

#include <pthread.h>
#include <signal.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef LT_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <memory>
#include <sstream>
#include <thread>
#include <type_traits>

namespace {

// The collectives live on ProcessGroup in libtorch 1.13; from 2.0 a
// ProcessGroup dispatches to per-device Backends, which is what
// ProcessGroupGloo and ProcessGroupNCCL have become.
using Group = std::conditional_t<std::is_base_of_v<c10d::Backend, c10d::ProcessGroupGloo>,
                                 c10d::Backend, c10d::ProcessGroup>;

// One all-reduce or broadcast moves at most this many bytes at once: large
// enough that a UNet's ~700 gradients take a handful of round trips, small
// enough that the flat copy costs little memory (DDP's bucket is 25 MiB).
constexpr int64_t kBucketBytes = 25 << 20;

// Python ignores SIGPIPE, and c10d and Gloo rely on it: their threads write
// to sockets whose peer may have died. In a Go program a SIGPIPE on a thread
// Go did not start kills the process, so calls into c10d run with SIGPIPE
// blocked; the threads they start inherit the mask, a write to a dead peer
// fails with EPIPE, and the collective returns an error instead.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &s, &old_);
  }
  ~SigpipeBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SigpipeBlocked(const SigpipeBlocked &) = delete;
  SigpipeBlocked &operator=(const SigpipeBlocked &) = delete;

 private:
  sigset_t old_;
};

bool is_loopback(const std::string &host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

// Gloo's transport binds one address per device and peers connect to it.
// A job on loopback binds loopback; otherwise, as torch.distributed does,
// GLOO_SOCKET_IFNAME (a comma-separated list) names the interfaces, or the
// address this machine's hostname resolves to is used.
std::vector<std::shared_ptr<::gloo::transport::Device>> gloo_devices(const std::string &master) {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  const char *ifnames = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifnames != nullptr && *ifnames != 0) {
    std::stringstream list(ifnames);
    std::string name;
    while (std::getline(list, name, ','))
      if (!name.empty()) devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
  } else if (is_loopback(master)) {
    devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(master));
  } else {
    devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return devices;
}

c10::intrusive_ptr<Group> new_group(const std::string &backend, const std::string &master,
                                    const c10::intrusive_ptr<c10d::Store> &store, int rank,
                                    int size, std::chrono::milliseconds timeout) {
  if (backend == "gloo") {
    auto o = c10d::ProcessGroupGloo::Options::create(timeout);
    o->devices = gloo_devices(master);
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, o);
  }
  if (backend == "nccl") {
#ifdef LT_WITH_NCCL
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, o);
#else
    throw std::runtime_error("this libtorch has no NCCL (the shim was built without c10d's "
                             "ProcessGroupNCCL); use the gloo backend");
#endif
  }
  throw std::invalid_argument("unknown backend \"" + backend + "\" (want gloo or nccl)");
}

// Runs f, prefixing any error with what it was doing: c10d's own messages
// ("Socket Timeout") do not say which step of joining a job failed.
template <class F>
auto step(const std::string &what, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error &e) {
    throw std::runtime_error(what + ": " + e.what_without_backtrace());
  } catch (const std::exception &e) {
    throw std::runtime_error(what + ": " + e.what());
  }
}

// Every rank counts itself in at the store and waits for the count to reach
// the world size, so that a rank that never came is reported as such rather
// than as a socket timeout inside Gloo's connection setup. Polling keeps the
// store's socket in step: a timed-out Store::wait can leave a late reply
// behind on it.
void wait_for_all(c10d::Store &store, int world, std::chrono::milliseconds timeout) {
  const std::string key = "lcpdiff/joined";
  int64_t joined = store.add(key, 1);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (joined < world) {
    if (std::chrono::steady_clock::now() >= deadline)
      throw std::runtime_error("only " + std::to_string(joined) + " of " + std::to_string(world) +
                               " ranks came within " + std::to_string(timeout.count() / 1000) + "s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    joined = store.add(key, 0);
  }
}

// Runs a collective over ts, one bucket at a time. c10d reads a vector of
// tensors as one tensor per local device, all of one shape, not as a list
// to reduce; and a collective per tensor would cost a round trip each. So a
// bucket is a run of consecutive tensors of one dtype and device, flattened
// into one buffer and copied back after. Every rank must pass the same
// shapes in the same order, as DDP requires, so that buckets match.
template <class Collective>
void in_buckets(const std::vector<at::Tensor> &ts, Collective collective) {
  size_t i = 0;
  while (i < ts.size()) {
    size_t j = i + 1;
    int64_t bytes = ts[i].nbytes();
    while (j < ts.size() && ts[j].scalar_type() == ts[i].scalar_type() &&
           ts[j].device() == ts[i].device() && bytes + int64_t(ts[j].nbytes()) <= kBucketBytes) {
      bytes += ts[j].nbytes();
      j++;
    }
    if (j == i + 1 && ts[i].is_contiguous()) {
      collective(ts[i]);  // in place, no copy
    } else {
      std::vector<at::Tensor> flats;
      for (size_t k = i; k < j; k++) flats.push_back(ts[k].reshape({-1}));
      at::Tensor flat = at::cat(flats);
      collective(flat);
      int64_t off = 0;
      for (size_t k = i; k < j; k++) {
        int64_t n = ts[k].numel();
        ts[k].copy_(flat.narrow(0, off, n).view(ts[k].sizes()));
        off += n;
      }
    }
    i = j;
  }
}

}  // namespace

struct lt_process_group_s {
  // Rank 0's store serves every rank's rendezvous, and NCCL goes back to it
  // at its first collective, so it lives as long as the group.
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
  int size = 1;
};

static lt_process_group_s &PG(lt_process_group pg) {
  if (pg == nullptr) throw std::invalid_argument("process group handle is NULL (closed group?)");
  return *pg;
}

extern "C" {

lt_error lt_dist_init(const char *backend, const char *master_addr, int master_port, int rank,
                      int world_size, int timeout_seconds, lt_process_group *out) {
  LT_TRY *out = nullptr;
  if (world_size < 1) throw std::invalid_argument("world size must be at least 1");
  if (rank < 0 || rank >= world_size)
    throw std::invalid_argument("rank " + std::to_string(rank) + " is outside 0.." +
                                std::to_string(world_size - 1));
  if (master_port < 1 || master_port > 65535)
    throw std::invalid_argument("master port " + std::to_string(master_port) + " is not a TCP port");
  if (timeout_seconds < 1) throw std::invalid_argument("timeout must be at least one second");
  SigpipeBlocked sigpipe;
  const std::chrono::milliseconds timeout(int64_t(timeout_seconds) * 1000);

  // Rank 0 serves the store; the others retry connecting to it until the
  // timeout. TCPStore's own wait for workers gives up silently, so the shim
  // counts the ranks itself.
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(master_port);
  so.isServer = rank == 0;
  so.numWorkers = static_cast<std::size_t>(world_size);
  so.waitWorkers = false;
  so.timeout = timeout;
  auto pg = std::make_unique<lt_process_group_s>();
  pg->store = step(rank == 0 ? "serving the rendezvous" : "joining the rendezvous",
                   [&] { return c10::make_intrusive<c10d::TCPStore>(master_addr, so); });
  step("waiting for the other ranks", [&] { wait_for_all(*pg->store, world_size, timeout); });
  pg->group = step(std::string("connecting the ") + backend + " group", [&] {
    return new_group(backend, master_addr, pg->store, rank, world_size, timeout);
  });
  pg->size = world_size;
  *out = pg.release();
  LT_CATCH
}

lt_error lt_dist_all_reduce(lt_process_group pg, const lt_tensor *ts, int n, int op) {
  LT_TRY auto &g = PG(pg);
  if (op != LT_DIST_SUM && op != LT_DIST_AVG)
    throw std::invalid_argument("unknown reduction " + std::to_string(op));
  auto tensors = lt::tensors(ts, n);
  SigpipeBlocked sigpipe;
  // Gradients and parameters are leaves: writing them back must not be
  // recorded by autograd.
  at::NoGradGuard no_grad;
  in_buckets(tensors, [&](const at::Tensor &flat) {
    std::vector<at::Tensor> one{flat};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;  // Gloo has no AVG
    g.group->allreduce(one, o)->wait();
    if (op == LT_DIST_AVG) flat.div_(g.size);
  });
  LT_CATCH
}

lt_error lt_dist_broadcast(lt_process_group pg, const lt_tensor *ts, int n, int root) {
  LT_TRY auto &g = PG(pg);
  if (root < 0 || root >= g.size)
    throw std::invalid_argument("root " + std::to_string(root) + " is outside 0.." +
                                std::to_string(g.size - 1));
  auto tensors = lt::tensors(ts, n);
  SigpipeBlocked sigpipe;
  at::NoGradGuard no_grad;
  in_buckets(tensors, [&](const at::Tensor &flat) {
    std::vector<at::Tensor> one{flat};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    g.group->broadcast(one, o)->wait();
  });
  LT_CATCH
}

lt_error lt_dist_barrier(lt_process_group pg) {
  LT_TRY auto &g = PG(pg);
  SigpipeBlocked sigpipe;
  g.group->barrier()->wait();
  LT_CATCH
}

void lt_dist_free(lt_process_group pg) {
  if (pg == nullptr) return;
  SigpipeBlocked sigpipe;
  try {
    pg->group.reset();  // joins the group's threads before the store goes
    pg->store.reset();
  } catch (...) {
    // Nothing to report to: the handle is gone either way.
  }
  delete pg;
}

}  // extern "C"

#else  // !LT_WITH_GLOO

namespace {
lt_error no_gloo() {
  return lt::error_line(
      "lcpdiff was built without c10d/Gloo (install libgloo-dev and rebuild the shim: make -B shim)");
}
}  // namespace

extern "C" {

lt_error lt_dist_init(const char *, const char *, int, int, int, int, lt_process_group *out) {
  *out = nullptr;
  return no_gloo();
}
lt_error lt_dist_all_reduce(lt_process_group, const lt_tensor *, int, int) { return no_gloo(); }
lt_error lt_dist_broadcast(lt_process_group, const lt_tensor *, int, int) { return no_gloo(); }
lt_error lt_dist_barrier(lt_process_group) { return no_gloo(); }
void lt_dist_free(lt_process_group) {}

}  // extern "C"

#endif  // LT_WITH_GLOO
