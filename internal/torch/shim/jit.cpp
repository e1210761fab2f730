// TorchScript modules: a network exported from Python with torch.jit.save
// (a detector, for box AP) runs here through torch::jit::load and its
// forward method, without the Python code that defined it.
#include <torch/script.h>

#include "common.h"

struct lt_module_s {
  torch::jit::Module m;
};

namespace {

torch::jit::Module &module(lt_module h) {
  if (h == nullptr) throw std::invalid_argument("module handle is NULL (closed module?)");
  return h->m;
}

// outputs flattens forward's result into tensors: one tensor, or a tuple or
// list of them. Anything else (a dict, None, a number) is the caller's
// contract broken, named in the error.
std::vector<at::Tensor> outputs(const c10::IValue &r) {
  std::vector<at::Tensor> ts;
  auto add = [&ts](const c10::IValue &v, size_t i) {
    if (!v.isTensor())
      throw std::runtime_error("forward returned a tuple whose element " + std::to_string(i) + " is " +
                               v.type()->str() + ", not a tensor");
    ts.push_back(v.toTensor());
  };
  if (r.isTensor()) {
    ts.push_back(r.toTensor());
  } else if (r.isTuple()) {
    const auto &elems = r.toTupleRef().elements();
    for (size_t i = 0; i < elems.size(); i++) add(elems[i], i);
  } else if (r.isList()) {
    auto list = r.toListRef();
    for (size_t i = 0; i < list.size(); i++) add(list[i], i);
  } else {
    throw std::runtime_error("forward returned " + r.type()->str() + ", want a tensor or a tuple of tensors");
  }
  for (size_t i = 0; i < ts.size(); i++)
    if (!ts[i].defined()) throw std::runtime_error("forward returned an undefined tensor as output " + std::to_string(i));
  return ts;
}

// shorten makes an error of the TorchScript interpreter fit one line: its
// message is two tracebacks (serialized and original code, every frame with
// its source lines) followed by the error itself. What is kept is the error
// and the deepest frame's location.
std::string shorten(const std::string &msg) {
  if (msg.find("The following operation failed in the TorchScript interpreter") == std::string::npos) return msg;
  size_t frame = msg.rfind("  File \"");
  if (frame == std::string::npos) return msg;
  size_t eol = msg.find('\n', frame);
  std::string where = msg.substr(frame + 2, eol == std::string::npos ? std::string::npos : eol - frame - 2);
  // The traceback's lines are indented; the error starts at the first line
  // after the last frame that is not.
  for (size_t at = eol; at != std::string::npos && at + 1 < msg.size(); at = msg.find('\n', at + 1)) {
    char c = msg[at + 1];
    if (c != ' ' && c != '\n') {
      std::string err = msg.substr(at + 1);
      while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
      return err + " (TorchScript " + where + ")";
    }
  }
  return msg;
}

// call runs forward, with interpreter errors shortened.
c10::IValue call(torch::jit::Method &method, std::vector<c10::IValue> args) {
  try {
    return method(std::move(args));
  } catch (const c10::Error &e) {
    throw std::runtime_error(shorten(e.what_without_backtrace()));
  } catch (const std::exception &e) {
    throw std::runtime_error(shorten(e.what()));
  }
}

}  // namespace

extern "C" {

lt_error lt_jit_load(const char *path, int device_type, int device_index, lt_module *out) {
  LT_TRY at::Device dev = lt::device(device_type, device_index);
  torch::jit::Module m = torch::jit::load(std::string(path), dev);
  // Saved modules keep the training flag they had; inference wants eval
  // behaviour (dropout off, batch-norm running statistics).
  m.eval();
  *out = new lt_module_s{std::move(m)};
  LT_CATCH
}

void lt_jit_free(lt_module m) { delete m; }

lt_error lt_jit_forward(lt_module h, const lt_tensor *inputs, int nin, lt_tensor *outs, int cap, int *nout) {
  LT_TRY auto &m = module(h);
  auto method = m.find_method("forward");
  if (!method) throw std::runtime_error("the module has no forward method");
  std::vector<c10::IValue> args;
  args.reserve(nin);
  for (int i = 0; i < nin; i++) args.emplace_back(lt::T(inputs[i]));
  // The guard belongs to this call, so it holds on whichever OS thread the
  // goroutine calls in from; the outputs carry no graph.
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> ts = outputs(call(*method, std::move(args)));
  if (static_cast<int>(ts.size()) > cap)
    throw std::runtime_error("forward returned " + std::to_string(ts.size()) + " tensors, at most " +
                             std::to_string(cap) + " were expected");
  // Every check is done: wrapping cannot fail half-way and leak handles.
  for (size_t i = 0; i < ts.size(); i++) outs[i] = lt::wrap(std::move(ts[i]));
  *nout = static_cast<int>(ts.size());
  LT_CATCH
}

}  // extern "C"
