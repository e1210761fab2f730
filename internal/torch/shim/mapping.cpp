// Memory-mapped weight files. A tensor made from a mapping holds a reference
// to it, so the file stays mapped while any view of its bytes lives, however
// the Go side drops its handles.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "common.h"

namespace {

struct Mapping {
  void *data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr) munmap(data, size);
  }
};

}  // namespace

struct lt_mapping_s {
  std::shared_ptr<Mapping> m;
};

extern "C" {

lt_error lt_mapping_open(const char *path, lt_mapping *out, const void **data, int64_t *size) {
  LT_TRY int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string("open ") + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    throw std::runtime_error(std::string("stat ") + path + ": " + std::strerror(e));
  }
  auto m = std::make_shared<Mapping>();
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    // Private and writable: pages are read lazily from the file, and a write
    // (an in-place update of a weight) copies the page instead of faulting.
    void *p = mmap(nullptr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int e = errno;
    if (p == MAP_FAILED) {
      close(fd);
      throw std::runtime_error(std::string("mmap ") + path + ": " + std::strerror(e));
    }
    m->data = p;
  }
  close(fd);
  *data = m->data;
  *size = static_cast<int64_t>(m->size);
  *out = new lt_mapping_s{std::move(m)};
  LT_CATCH
}

void lt_mapping_free(lt_mapping m) { delete m; }

lt_error lt_mapping_tensor(lt_mapping m, int64_t offset, int64_t nbytes, const int64_t *shape, int ndim,
                           int dtype, lt_tensor *out) {
  LT_TRY if (m == nullptr) throw std::invalid_argument("mapping handle is NULL");
  std::shared_ptr<Mapping> keep = m->m;
  if (offset < 0 || nbytes < 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(nbytes) > keep->size)
    throw std::out_of_range("bytes [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                            ") lie outside the file of " + std::to_string(keep->size) + " bytes");
  at::ScalarType st = lt::scalar_type(dtype);
  at::IntArrayRef sizes = lt::ints(shape, ndim);
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  int64_t elem = static_cast<int64_t>(c10::elementSize(st));
  if (numel * elem != nbytes)
    throw std::invalid_argument("shape needs " + std::to_string(numel * elem) + " bytes, the file gives " +
                                std::to_string(nbytes));
  char *p = static_cast<char *>(keep->data) + offset;
  auto options = at::TensorOptions().dtype(st);
  if (nbytes == 0) {
    *out = lt::wrap(at::empty(sizes, options));
  } else if (reinterpret_cast<uintptr_t>(p) % elem != 0) {
    // Unaligned in the file: vector kernels may assume natural alignment, so copy.
    at::Tensor t = at::empty(sizes, options);
    std::memcpy(t.data_ptr(), p, nbytes);
    *out = lt::wrap(std::move(t));
  } else {
    *out = lt::wrap(at::from_blob(p, sizes, [keep](void *) {}, options));
  }
  LT_CATCH
}

}  // extern "C"
