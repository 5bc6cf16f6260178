/*
 * peercred: the credentials (pid, uid, gid) of the process at the other end of a connected
 * UNIX-domain socket, read with getsockopt(SO_PEERCRED). Node has no API for this.
 * Owns: the one native call and its error reporting. Must not: keep state, open, close or
 * otherwise touch the descriptor beyond reading its options.
 *
 * JavaScript: peerCredentials(fd: number): { pid: number, uid: number, gid: number }
 * Errors carry `code`:
 *   WS_PEERCRED_UNSUPPORTED  not Linux (SO_PEERCRED is Linux-only)
 *   WS_PEERCRED_BAD_FD       the argument is not a non-negative integer
 *   WS_PEERCRED_NOT_UNIX     the descriptor is not a socket, or not a UNIX stream/seqpacket one
 *                            (on other sockets Linux "succeeds" with uid 65534, which would lie)
 *   WS_PEERCRED_FAILED       getsockopt failed; `errno` and `syscall` are set
 */
#ifdef __linux__
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#endif
#include <stdio.h>
#include <node_api.h>

#define CHECK(call)                                                                              \
  do {                                                                                           \
    if ((call) != napi_ok) return NULL;                                                          \
  } while (0)

/* Throws an Error with a message, a `code` and (when errnum != 0) `errno` and `syscall`. */
static napi_value throw_error(napi_env env, const char *code, const char *message, int errnum) {
  napi_value msg, code_value, error;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok) return NULL;
  if (napi_create_error(env, code_value, msg, &error) != napi_ok) return NULL;
  if (errnum != 0) {
    napi_value errno_value, syscall;
    if (napi_create_int32(env, errnum, &errno_value) == napi_ok) napi_set_named_property(env, error, "errno", errno_value);
    if (napi_create_string_utf8(env, "getsockopt", NAPI_AUTO_LENGTH, &syscall) == napi_ok) {
      napi_set_named_property(env, error, "syscall", syscall);
    }
  }
  napi_throw(env, error);
  return NULL;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));

  napi_valuetype type = napi_undefined;
  if (argc >= 1) CHECK(napi_typeof(env, argv[0], &type));
  double number = -1;
  if (type == napi_number) CHECK(napi_get_value_double(env, argv[0], &number));
  if (type != napi_number || number < 0 || number > 2147483647.0 || number != (double)(int)number) {
    return throw_error(env, "WS_PEERCRED_BAD_FD", "peerCredentials(fd): fd must be a non-negative integer file descriptor", 0);
  }
  int fd = (int)number;

#ifdef __linux__
  char message[256];
  int domain = 0, socktype = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_DOMAIN): %s", fd, strerror(e));
    return throw_error(env, e == ENOTSOCK ? "WS_PEERCRED_NOT_UNIX" : "WS_PEERCRED_FAILED", message, e);
  }
  len = sizeof socktype;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &socktype, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_TYPE): %s", fd, strerror(e));
    return throw_error(env, "WS_PEERCRED_FAILED", message, e);
  }
  if (domain != AF_UNIX || (socktype != SOCK_STREAM && socktype != SOCK_SEQPACKET)) {
    snprintf(message, sizeof message,
             "fd %d is not a UNIX-domain stream socket (domain %d, type %d); peer credentials exist only for UNIX sockets",
             fd, domain, socktype);
    return throw_error(env, "WS_PEERCRED_NOT_UNIX", message, 0);
  }
  struct ucred cred;
  memset(&cred, 0, sizeof cred);
  len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_PEERCRED): %s", fd, strerror(e));
    return throw_error(env, "WS_PEERCRED_FAILED", message, e);
  }
  if (len != sizeof cred) {
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_PEERCRED) returned %u bytes, expected %u", fd,
             (unsigned)len, (unsigned)sizeof cred);
    return throw_error(env, "WS_PEERCRED_FAILED", message, 0);
  }

  napi_value result, pid, uid, gid;
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_int64(env, (int64_t)cred.pid, &pid));
  CHECK(napi_create_uint32(env, (uint32_t)cred.uid, &uid));
  CHECK(napi_create_uint32(env, (uint32_t)cred.gid, &gid));
  CHECK(napi_set_named_property(env, result, "pid", pid));
  CHECK(napi_set_named_property(env, result, "uid", uid));
  CHECK(napi_set_named_property(env, result, "gid", gid));
  return result;
#else
  (void)fd;
  return throw_error(env, "WS_PEERCRED_UNSUPPORTED",
                     "peer credentials (SO_PEERCRED) are only implemented on Linux; this platform has none here", 0);
#endif
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok) return NULL;
  return exports;
}
