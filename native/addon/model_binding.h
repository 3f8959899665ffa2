// The SAFL network as a JavaScript class, NativeModel (see model_binding.cpp); lib/recognizer.ts
// is its one caller.
#pragma once
#include <napi.h>

namespace safl::addon {

// Adds the NativeModel class to the addon's exports.
void register_model_binding(Napi::Env env, Napi::Object exports);

}  // namespace safl::addon
