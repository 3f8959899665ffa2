// PromiseWorker: the one way the addon runs heavy work off the event loop. Subclasses implement
// Run() (worker thread; may throw) and Result() (main thread; builds the resolved value). A C++
// exception thrown in Run() rejects the promise with the JS error class its kind maps to.
#pragma once
#include <napi.h>

#include <exception>

#include "addon/napi_util.h"

namespace safl::addon {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}

  // Queues the worker and returns its promise.
  Napi::Promise start() {
    Napi::Promise promise = deferred_.Promise();
    Queue();
    return promise;
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;

 private:
  void Execute() final {
    try {
      Run();
    } catch (const std::exception& e) {
      error_ = std::current_exception();
      SetError(e.what());
    }
  }
  void OnOK() final { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error& generic) final {
    Napi::HandleScope scope(Env());
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      deferred_.Reject(to_js_error(Env(), e).Value());
    } catch (...) {
      deferred_.Reject(generic.Value());
    }
  }

  Napi::Promise::Deferred deferred_;
  std::exception_ptr error_;
};

}  // namespace safl::addon
