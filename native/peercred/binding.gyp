# node-gyp build of the peer-credentials addon (SO_PEERCRED, and the identd's exact TCP socket
# lookups through netlink sock_diag, through N-API; both from libc, no extra libraries).
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
