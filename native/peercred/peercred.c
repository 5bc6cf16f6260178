/*
 * peercred: what the kernel knows about the owner of a socket, which Node cannot ask for.
 *  - the credentials (pid, uid, gid) of the process at the other end of a connected UNIX-domain
 *    socket, read with getsockopt(SO_PEERCRED);
 *  - the owner (uid, inode) and state of ONE TCP socket named by its exact 4-tuple, asked with a
 *    NETLINK_SOCK_DIAG SOCK_DIAG_BY_FAMILY request without NLM_F_DUMP (what `ss` does for one
 *    socket): the kernel looks the socket up in its hash tables, so the cost does not grow with
 *    the number of sockets on the host (the identd's answer; /proc/net/tcp is the slow fallback).
 * Owns: these native calls and their error reporting. Must not: keep state between calls (every
 * diag call opens and closes its own netlink socket), open, close or otherwise touch a caller's
 * descriptor beyond reading its options, or decide what an answer means (the identd does).
 *
 * JavaScript:
 *   peerCredentials(fd: number): { pid: number, uid: number, gid: number }
 *   tcpDiagLookup(family: 4 | 6, local: Buffer, localPort: number, remote: Buffer, remotePort: number,
 *                 ifindex: number): null | { family: 4 | 6, state, uid, inode, ifindex,
 *                 local: Buffer, localPort, remote: Buffer, remotePort }
 *       null: the kernel has no socket for that 4-tuple (ENOENT). Addresses are in network order,
 *       4 bytes for family 4 and 16 for family 6. The answer is the socket the kernel found, which
 *       may be a listener or a TIME_WAIT socket: the caller checks state, inode and the 4-tuple.
 *   tcpDiagProbe(family: 4 | 6, protocol?: number): undefined
 *       throws unless the kernel's diag handler for (family, protocol, default TCP) answers. A
 *       missing handler (CONFIG_INET_DIAG off, tcp_diag not loadable) makes exact lookups fail
 *       with ENOENT, the same as "no such socket", so lookups are only trusted after a probe.
 *   interfaceIndexes(): number[]   the network interfaces of this namespace (if_nameindex), for
 *       sockets bound to a device (SO_BINDTODEVICE, IPv6 link-local), which an exact lookup only
 *       finds when asked with their interface index.
 * Errors carry `code`:
 *   WS_PEERCRED_UNSUPPORTED  not Linux (SO_PEERCRED and sock_diag are Linux-only)
 *   WS_PEERCRED_BAD_FD       the argument is not a non-negative integer
 *   WS_PEERCRED_NOT_UNIX     the descriptor is not a socket, or not a UNIX stream/seqpacket one
 *                            (on other sockets Linux "succeeds" with uid 65534, which would lie)
 *   WS_PEERCRED_FAILED       getsockopt failed; `errno` and `syscall` are set
 *   WS_SOCKDIAG_BAD_ARGUMENT a diag argument has the wrong type, size or range
 *   WS_SOCKDIAG_FAILED       a netlink call failed or the kernel refused the request; `errno` and
 *                            `syscall` are set when there is an errno
 */
#ifdef __linux__
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <node_api.h>

#define CHECK(call)                                                                              \
  do {                                                                                           \
    if ((call) != napi_ok) return NULL;                                                          \
  } while (0)

/* Throws an Error with a message, a `code` and (when errnum != 0) `errno` and `syscall`. */
static napi_value throw_error(napi_env env, const char *code, const char *message, int errnum, const char *syscall_name) {
  napi_value msg, code_value, error;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value) != napi_ok) return NULL;
  if (napi_create_error(env, code_value, msg, &error) != napi_ok) return NULL;
  if (errnum != 0) {
    napi_value errno_value, syscall;
    if (napi_create_int32(env, errnum, &errno_value) == napi_ok) napi_set_named_property(env, error, "errno", errno_value);
    if (napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &syscall) == napi_ok) {
      napi_set_named_property(env, error, "syscall", syscall);
    }
  }
  napi_throw(env, error);
  return NULL;
}

/* Reads argv[i] as an integer in [min, max]; false (and nothing thrown) when it is not one. */
static int integer_arg(napi_env env, napi_value value, double min, double max, int64_t *out) {
  napi_valuetype type = napi_undefined;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_number) return 0;
  double number = 0;
  if (napi_get_value_double(env, value, &number) != napi_ok) return 0;
  if (!(number >= min && number <= max) || number != (double)(int64_t)number) return 0;
  *out = (int64_t)number;
  return 1;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));

  int64_t number = -1;
  if (argc < 1 || !integer_arg(env, argv[0], 0, 2147483647.0, &number)) {
    return throw_error(env, "WS_PEERCRED_BAD_FD", "peerCredentials(fd): fd must be a non-negative integer file descriptor", 0, NULL);
  }
  int fd = (int)number;

#ifdef __linux__
  char message[256];
  int domain = 0, socktype = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_DOMAIN): %s", fd, strerror(e));
    return throw_error(env, e == ENOTSOCK ? "WS_PEERCRED_NOT_UNIX" : "WS_PEERCRED_FAILED", message, e, "getsockopt");
  }
  len = sizeof socktype;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &socktype, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_TYPE): %s", fd, strerror(e));
    return throw_error(env, "WS_PEERCRED_FAILED", message, e, "getsockopt");
  }
  if (domain != AF_UNIX || (socktype != SOCK_STREAM && socktype != SOCK_SEQPACKET)) {
    snprintf(message, sizeof message,
             "fd %d is not a UNIX-domain stream socket (domain %d, type %d); peer credentials exist only for UNIX sockets",
             fd, domain, socktype);
    return throw_error(env, "WS_PEERCRED_NOT_UNIX", message, 0, NULL);
  }
  struct ucred cred;
  memset(&cred, 0, sizeof cred);
  len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_PEERCRED): %s", fd, strerror(e));
    return throw_error(env, "WS_PEERCRED_FAILED", message, e, "getsockopt");
  }
  if (len != sizeof cred) {
    snprintf(message, sizeof message, "getsockopt(fd %d, SO_PEERCRED) returned %u bytes, expected %u", fd,
             (unsigned)len, (unsigned)sizeof cred);
    return throw_error(env, "WS_PEERCRED_FAILED", message, 0, NULL);
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
                     "peer credentials (SO_PEERCRED) are only implemented on Linux; this platform has none here", 0, NULL);
#endif
}

#ifdef __linux__

/* The kernel answers a sock_diag request from inside sendmsg(), so the reply is queued before
 * recv() is called; the timeout only guards against a kernel that never answers. */
#define DIAG_RECV_TIMEOUT_MS 1000
/* One inet_diag_msg plus the attributes the kernel adds unasked (shutdown, cgroup, sockopt, ...). */
#define DIAG_REPLY_BYTES 16384
/* A probe dump (no states) yields no sockets; this bounds the loop if a kernel sends some anyway. */
#define DIAG_PROBE_MAX_READS 64

typedef struct {
  int errnum;             /* errno of the failed call, or 0 */
  const char *syscall;    /* the call that failed */
  char message[256];
} diag_error;

static int diag_fail(diag_error *err, int errnum, const char *syscall_name, const char *what) {
  err->errnum = errnum;
  err->syscall = syscall_name;
  if (errnum != 0) snprintf(err->message, sizeof err->message, "%s: %s", what, strerror(errnum));
  else snprintf(err->message, sizeof err->message, "%s", what);
  return -1;
}

/* A netlink socket for sock_diag with a receive timeout; -1 and err set on failure. */
static int diag_socket(diag_error *err) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return diag_fail(err, errno, "socket", "socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
  struct timeval tv = {DIAG_RECV_TIMEOUT_MS / 1000, (DIAG_RECV_TIMEOUT_MS % 1000) * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    int e = errno;
    close(fd);
    return diag_fail(err, e, "setsockopt", "setsockopt(netlink, SO_RCVTIMEO)");
  }
  return fd;
}

static int diag_send(int fd, const struct inet_diag_req_v2 *request, uint16_t flags, diag_error *err) {
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = flags;
  msg.nlh.nlmsg_seq = 1; /* one request per socket */
  msg.req = *request;
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof kernel);
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&kernel, sizeof kernel);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return diag_fail(err, errno, "sendto", "sendto(netlink SOCK_DIAG_BY_FAMILY)");
  if ((size_t)sent != sizeof msg) return diag_fail(err, 0, NULL, "sendto(netlink): short write");
  return 0;
}

/* Receives one datagram from the kernel (not from another process); its length, or -1. */
static ssize_t diag_recv(int fd, void *buffer, size_t size, diag_error *err) {
  for (;;) {
    struct sockaddr_nl from;
    struct iovec iov = {buffer, size};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&from, 0, sizeof from);
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t got = recvmsg(fd, &mh, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      int e = errno;
      return diag_fail(err, e, "recvmsg",
                       e == EAGAIN || e == EWOULDBLOCK ? "recvmsg(netlink): the kernel did not answer within 1 s"
                                                       : "recvmsg(netlink)");
    }
    if (mh.msg_flags & MSG_TRUNC) return diag_fail(err, 0, NULL, "recvmsg(netlink): the kernel's answer did not fit the buffer");
    if (from.nl_pid != 0) continue; /* not from the kernel: ignore */
    return got;
  }
}

/* The negative errno carried by an NLMSG_ERROR message, or -EBADMSG if it is cut short. */
static int netlink_error_of(const struct nlmsghdr *h) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) return -EBADMSG;
  const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
  return e->error;
}

typedef struct {
  int found;
  struct inet_diag_msg msg;
} diag_answer;

/* One exact lookup. 0 with answer->found = 0 when the kernel has no such socket. */
static int diag_exact(const struct inet_diag_req_v2 *request, diag_answer *answer, diag_error *err) {
  answer->found = 0;
  int fd = diag_socket(err);
  if (fd < 0) return -1;
  int rc = diag_send(fd, request, NLM_F_REQUEST, err);
  uint64_t buffer[DIAG_REPLY_BYTES / sizeof(uint64_t)]; /* uint64_t: aligned for struct nlmsghdr */
  while (rc == 0) {
    ssize_t got = diag_recv(fd, buffer, sizeof buffer, err);
    if (got < 0) {
      rc = -1;
      break;
    }
    int done = 0;
    size_t left = (size_t)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != 1) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        int e = -netlink_error_of(h);
        if (e == 0) continue; /* an ACK; not asked for, harmless */
        /* ENOENT: no socket with this 4-tuple (answer->found stays 0) */
        if (e != ENOENT) rc = diag_fail(err, e, "sock_diag", "the kernel refused the SOCK_DIAG_BY_FAMILY lookup");
        done = 1;
        break;
      }
      if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
          rc = diag_fail(err, 0, NULL, "sock_diag: the kernel's answer is shorter than struct inet_diag_msg");
        } else {
          memcpy(&answer->msg, NLMSG_DATA(h), sizeof answer->msg);
          answer->found = 1;
        }
        done = 1;
        break;
      }
    }
    if (done) break;
  }
  close(fd);
  return rc;
}

/* A dump that asks for no states: answers DONE at once when the handler exists, an error if not. */
static int diag_probe(uint8_t family, uint8_t protocol, diag_error *err) {
  struct inet_diag_req_v2 request;
  memset(&request, 0, sizeof request);
  request.sdiag_family = family;
  request.sdiag_protocol = protocol;
  request.idiag_states = 0;
  request.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  int fd = diag_socket(err);
  if (fd < 0) return -1;
  int rc = diag_send(fd, &request, NLM_F_REQUEST | NLM_F_DUMP, err);
  uint64_t buffer[DIAG_REPLY_BYTES / sizeof(uint64_t)];
  int done = 0;
  for (int reads = 0; rc == 0 && !done; reads++) {
    if (reads >= DIAG_PROBE_MAX_READS) {
      rc = diag_fail(err, 0, NULL, "sock_diag probe: the kernel's dump did not end");
      break;
    }
    ssize_t got = diag_recv(fd, buffer, sizeof buffer, err);
    if (got < 0) {
      rc = -1;
      break;
    }
    size_t left = (size_t)got;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != 1) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        int e = -netlink_error_of(h);
        if (e == 0) continue;
        rc = diag_fail(err, e, "sock_diag", "the kernel has no sock_diag handler for this family and protocol");
        done = 1;
        break;
      }
      if (h->nlmsg_type == NLMSG_DONE) {
        /* since Linux 4.x a dump that failed says so in DONE's payload */
        if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
          int status = *(const int *)NLMSG_DATA(h);
          if (status < 0) rc = diag_fail(err, -status, "sock_diag", "the kernel's sock_diag dump failed");
        }
        done = 1;
        break;
      }
    }
  }
  close(fd);
  return rc;
}

static napi_value throw_diag(napi_env env, const diag_error *err) {
  return throw_error(env, "WS_SOCKDIAG_FAILED", err->message, err->errnum, err->syscall ? err->syscall : "sock_diag");
}

static int family_arg(napi_env env, napi_value value, uint8_t *family, size_t *address_bytes) {
  int64_t f = 0;
  if (!integer_arg(env, value, 4, 6, &f) || (f != 4 && f != 6)) return 0;
  *family = f == 4 ? AF_INET : AF_INET6;
  *address_bytes = f == 4 ? 4 : 16;
  return 1;
}

static int address_arg(napi_env env, napi_value value, size_t expected, uint32_t out[4]) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return 0;
  void *data = NULL;
  size_t length = 0;
  if (napi_get_buffer_info(env, value, &data, &length) != napi_ok || length != expected) return 0;
  memset(out, 0, 4 * sizeof(uint32_t));
  memcpy(out, data, expected);
  return 1;
}

static napi_value set_uint(napi_env env, napi_value object, const char *name, uint32_t value) {
  napi_value v;
  CHECK(napi_create_uint32(env, value, &v));
  CHECK(napi_set_named_property(env, object, name, v));
  return object;
}

static napi_value set_address(napi_env env, napi_value object, const char *name, const uint32_t address[4], size_t bytes) {
  napi_value v;
  CHECK(napi_create_buffer_copy(env, bytes, address, NULL, &v));
  CHECK(napi_set_named_property(env, object, name, v));
  return object;
}

#endif /* __linux__ */

static napi_value tcp_diag_lookup(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
#ifdef __linux__
  struct inet_diag_req_v2 request;
  memset(&request, 0, sizeof request);
  size_t address_bytes = 0;
  int64_t local_port = 0, remote_port = 0, ifindex = 0;
  if (argc < 6 || !family_arg(env, argv[0], &request.sdiag_family, &address_bytes) ||
      !address_arg(env, argv[1], address_bytes, request.id.idiag_src) ||
      !integer_arg(env, argv[2], 0, 65535, &local_port) ||
      !address_arg(env, argv[3], address_bytes, request.id.idiag_dst) ||
      !integer_arg(env, argv[4], 0, 65535, &remote_port) || !integer_arg(env, argv[5], 0, 2147483647.0, &ifindex)) {
    return throw_error(env, "WS_SOCKDIAG_BAD_ARGUMENT",
                       "tcpDiagLookup(family 4|6, local Buffer(4|16), localPort 0-65535, remote Buffer(4|16), "
                       "remotePort 0-65535, ifindex >= 0): bad argument",
                       0, NULL);
  }
  request.sdiag_protocol = IPPROTO_TCP;
  request.idiag_ext = 0;
  /* An exact lookup ignores the state mask; all states, so nothing is filtered where we cannot see. */
  request.idiag_states = ~0U;
  request.id.idiag_sport = htons((uint16_t)local_port);
  request.id.idiag_dport = htons((uint16_t)remote_port);
  request.id.idiag_if = (uint32_t)ifindex;
  request.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  request.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;

  diag_answer answer;
  diag_error err;
  memset(&err, 0, sizeof err);
  if (diag_exact(&request, &answer, &err) != 0) return throw_diag(env, &err);
  napi_value result;
  if (!answer.found) {
    CHECK(napi_get_null(env, &result));
    return result;
  }
  const struct inet_diag_msg *m = &answer.msg;
  size_t bytes = m->idiag_family == AF_INET ? 4 : 16;
  CHECK(napi_create_object(env, &result));
  if (!set_uint(env, result, "family", m->idiag_family == AF_INET ? 4 : 6)) return NULL;
  if (!set_uint(env, result, "state", m->idiag_state)) return NULL;
  if (!set_uint(env, result, "uid", m->idiag_uid)) return NULL;
  if (!set_uint(env, result, "inode", m->idiag_inode)) return NULL;
  if (!set_uint(env, result, "ifindex", m->id.idiag_if)) return NULL;
  if (!set_address(env, result, "local", m->id.idiag_src, bytes)) return NULL;
  if (!set_uint(env, result, "localPort", ntohs(m->id.idiag_sport))) return NULL;
  if (!set_address(env, result, "remote", m->id.idiag_dst, bytes)) return NULL;
  if (!set_uint(env, result, "remotePort", ntohs(m->id.idiag_dport))) return NULL;
  return result;
#else
  (void)argc;
  return throw_error(env, "WS_PEERCRED_UNSUPPORTED", "sock_diag (NETLINK_SOCK_DIAG) exists only on Linux", 0, NULL);
#endif
}

static napi_value tcp_diag_probe(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
#ifdef __linux__
  uint8_t family = 0;
  size_t address_bytes = 0;
  int64_t protocol = IPPROTO_TCP;
  napi_valuetype second = napi_undefined;
  if (argc >= 2) CHECK(napi_typeof(env, argv[1], &second));
  if (argc < 1 || !family_arg(env, argv[0], &family, &address_bytes) ||
      (second != napi_undefined && !integer_arg(env, argv[1], 0, 255, &protocol))) {
    return throw_error(env, "WS_SOCKDIAG_BAD_ARGUMENT", "tcpDiagProbe(family 4|6, protocol 0-255 = TCP): bad argument", 0, NULL);
  }
  diag_error err;
  memset(&err, 0, sizeof err);
  if (diag_probe(family, (uint8_t)protocol, &err) != 0) return throw_diag(env, &err);
  napi_value result;
  CHECK(napi_get_undefined(env, &result));
  return result;
#else
  (void)argc;
  return throw_error(env, "WS_PEERCRED_UNSUPPORTED", "sock_diag (NETLINK_SOCK_DIAG) exists only on Linux", 0, NULL);
#endif
}

static napi_value interface_indexes(napi_env env, napi_callback_info info) {
  (void)info;
#ifdef __linux__
  struct if_nameindex *list = if_nameindex();
  if (list == NULL) {
    diag_error err;
    diag_fail(&err, errno, "if_nameindex", "if_nameindex()");
    return throw_diag(env, &err);
  }
  napi_value result;
  uint32_t n = 0;
  if (napi_create_array(env, &result) != napi_ok) {
    if_freenameindex(list);
    return NULL;
  }
  for (struct if_nameindex *i = list; i->if_index != 0; i++) {
    napi_value v;
    if (napi_create_uint32(env, i->if_index, &v) != napi_ok || napi_set_element(env, result, n++, v) != napi_ok) {
      if_freenameindex(list);
      return NULL;
    }
  }
  if_freenameindex(list);
  return result;
#else
  return throw_error(env, "WS_PEERCRED_UNSUPPORTED", "interface indexes are only read on Linux here", 0, NULL);
#endif
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  static const struct {
    const char *name;
    napi_callback cb;
  } functions[] = {
      {"peerCredentials", peer_credentials},
      {"tcpDiagLookup", tcp_diag_lookup},
      {"tcpDiagProbe", tcp_diag_probe},
      {"interfaceIndexes", interface_indexes},
  };
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].cb, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, functions[i].name, fn) != napi_ok) return NULL;
  }
  return exports;
}
