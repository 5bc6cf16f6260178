# node-gyp build of the peer-credentials addon (SO_PEERCRED through N-API).
# Owns: how native/peercred/peercred.c is compiled. Must not: depend on nan or node-addon-api.
# Build: `npm run build:native` (node-gyp rebuild -C native/peercred); output in build/Release.
{
  "targets": [
    {
      "target_name": "peercred",
      "sources": ["peercred.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    }
  ]
}
