# node-gyp build of the CPU addon: the fallback that node-gyp-build and prebuildify know.
# The main build is CMakeLists.txt (cmake-js); both compile the same sources with the same flags,
# and neither uses -march=native (SIMD paths are chosen at run time, native/common/cpu_features.h).
{
  "targets": [
    {
      "target_name": "safl",
      "sources": [
        "<!@(node -e \"const fs=require('fs');for(const d of ['native/common','native/cpu','native/model','native/addon'])if(fs.existsSync(d))for(const f of fs.readdirSync(d).sort())if(f.endsWith('.cpp'))console.log(d+'/'+f)\")"
      ],
      "include_dirs": [
        "native",
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS", "SAFL_ADDON_NAME=safl"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_ENABLE_CPP_RTTI": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17"
      },
      "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1 } }
    }
  ]
}
