// Training the SAFL network from JavaScript: the NativeTrainer class (see train_binding.cpp);
// lib/trainer.ts is its one caller.
#pragma once
#include <napi.h>

namespace safl::addon {

// Adds the NativeTrainer class to the addon's exports.
void register_train_binding(Napi::Env env, Napi::Object exports);

}  // namespace safl::addon
