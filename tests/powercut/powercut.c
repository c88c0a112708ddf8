/* Power-cut journal: an LD_PRELOAD shim that records, for files under one folder, everything a
 * power cut could take back, so that tests/powercut/__init__.py can take it back after the process
 * is killed. See that file for the model and its limits.
 *
 * Environment:
 *   POWERCUT_DIR      the folder whose files are tracked (an absolute path without symlinks)
 *   POWERCUT_JOURNAL  the journal file, outside that folder (appended to, created if missing)
 *   POWERCUT_KEEP     a folder outside POWERCUT_DIR on the same filesystem: hard links to files
 *                     that a rename replaced or an unlink removed, so their removal can be undone
 *   POWERCUT_IGNORE   optional name suffix of files that are not tracked (default "-shm")
 *   POWERCUT_ARM      optional file read on SIGUSR2: "OP SUFFIX COUNT WHEN" arms a self-kill
 *                     (SIGKILL) at the COUNT-th following OP on a tracked file whose name ends with
 *                     SUFFIX ("*" for any), WHEN "before" or "after" the call itself; OP is one of
 *                     write, sync, trunc, rename, unlink, any
 *
 * Before a write to a tracked file the shim appends an undo record (path, offset, the bytes the
 * write will replace, the file size); before a truncation the bytes it cuts off; fsync/fdatasync
 * appends a sync mark; creations, renames and unlinks are recorded with what is needed to undo
 * them. Every record is appended with one write(2) to the journal under one lock, before the call
 * it describes (sync marks after the sync succeeded), so the journal is in the order the calls
 * reached the kernel.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 65536
#define REC_MAGIC 0x50430000u

enum rec_type { REC_WRITE = 1, REC_TRUNC = 2, REC_SYNC = 3, REC_CREATE = 4, REC_RENAME = 5, REC_UNLINK = 6 };
enum op_kind { OP_WRITE = 1, OP_SYNC, OP_TRUNC, OP_RENAME, OP_UNLINK, OP_ANY };

struct rec_header {
    uint32_t magic_type;
    uint32_t len1;
    uint32_t len2;
    uint32_t pid;
    uint64_t dev;
    uint64_t ino;
    int64_t a;
    int64_t b;
    int64_t c;
    uint64_t dlen;
};

struct tracked_fd {
    char *path;
    dev_t dev;
    ino_t ino;
    int isdir;
};

static char root[PATH_MAX];
static size_t rootlen;
static char keepdir[PATH_MAX];
static char armfile[PATH_MAX];
static char ignore_suffix[64] = "-shm";
static int journal_fd = -1;
static volatile int enabled;
static unsigned long keep_counter;
static int64_t records; /* records appended by this process: the index of the next one */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct tracked_fd fds[MAXFD];
static volatile unsigned char is_tracked[MAXFD];

static volatile sig_atomic_t rearm;
static struct {
    int active;
    int op;
    char suffix[64];
    long count;
    int after;
} trigger;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_truncate)(const char *, off_t);
static int (*real_truncate64)(const char *, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);

static void on_sigusr2(int sig) {
    (void)sig;
    rearm = 1;
}

static void *next(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    return f;
}

static void init(void) {
    real_open = next("open");
    real_open64 = next("open64");
    real_openat = next("openat");
    real_openat64 = next("openat64");
    real_write = next("write");
    real_pwrite = next("pwrite");
    real_pwrite64 = next("pwrite64");
    real_writev = next("writev");
    real_pwritev = next("pwritev");
    real_pwritev64 = next("pwritev64");
    real_pwritev2 = next("pwritev2");
    real_pwritev64v2 = next("pwritev64v2");
    real_pread = next("pread");
    real_ftruncate = next("ftruncate");
    real_ftruncate64 = next("ftruncate64");
    real_truncate = next("truncate");
    real_truncate64 = next("truncate64");
    real_fsync = next("fsync");
    real_fdatasync = next("fdatasync");
    real_close = next("close");
    real_rename = next("rename");
    real_renameat = next("renameat");
    real_renameat2 = next("renameat2");
    real_unlink = next("unlink");
    real_unlinkat = next("unlinkat");

    const char *dir = getenv("POWERCUT_DIR");
    const char *journal = getenv("POWERCUT_JOURNAL");
    const char *keep = getenv("POWERCUT_KEEP");
    if (dir == NULL || journal == NULL || keep == NULL || dir[0] != '/') {
        return;
    }
    snprintf(root, sizeof root, "%s", dir);
    rootlen = strlen(root);
    while (rootlen > 1 && root[rootlen - 1] == '/') {
        root[--rootlen] = '\0';
    }
    snprintf(keepdir, sizeof keepdir, "%s", keep);
    const char *ignore = getenv("POWERCUT_IGNORE");
    if (ignore != NULL) {
        snprintf(ignore_suffix, sizeof ignore_suffix, "%s", ignore);
    }
    const char *arm = getenv("POWERCUT_ARM");
    if (arm != NULL) {
        snprintf(armfile, sizeof armfile, "%s", arm);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigusr2;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR2, &sa, NULL);
    }
    journal_fd = real_open(journal, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (journal_fd < 0) {
        fprintf(stderr, "powercut: cannot open journal %s: %s\n", journal, strerror(errno));
        abort();
    }
    enabled = 1;
}

__attribute__((constructor)) static void powercut_init(void) { pthread_once(&once, init); }

static void ensure(void) { pthread_once(&once, init); }

/* ---- the journal --------------------------------------------------------------------------- */

static void die(const char *what) {
    fprintf(stderr, "powercut: journal write failed (%s): %s\n", what, strerror(errno));
    abort();
}

static void append(uint32_t type, const char *p1, const char *p2, dev_t dev, ino_t ino, int64_t a,
                   int64_t b, int64_t c, const void *data, size_t dlen) {
    struct rec_header h;
    memset(&h, 0, sizeof h);
    h.magic_type = REC_MAGIC | type;
    h.len1 = p1 ? (uint32_t)strlen(p1) : 0;
    h.len2 = p2 ? (uint32_t)strlen(p2) : 0;
    h.pid = (uint32_t)getpid();
    h.dev = (uint64_t)dev;
    h.ino = (uint64_t)ino;
    h.a = a;
    h.b = b;
    h.c = c;
    h.dlen = dlen;
    struct iovec iov[4] = {
        {&h, sizeof h}, {(void *)p1, h.len1}, {(void *)p2, h.len2}, {(void *)data, dlen}};
    size_t total = sizeof h + h.len1 + h.len2 + dlen;
    /* one write: the journal is O_APPEND, so a record is never interleaved with another */
    ssize_t n = real_writev(journal_fd, iov, 4);
    if (n < 0 || (size_t)n != total) {
        die("writev");
    }
    records++;
}

/* ---- paths ---------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return lx <= ls && memcmp(s + ls - lx, suffix, lx) == 0;
}

static int under_root(const char *p) {
    return strncmp(p, root, rootlen) == 0 && (p[rootlen] == '/' || p[rootlen] == '\0');
}

/* The absolute, normalized path of (dirfd, path) in out; 1 when it is tracked. */
static int resolve(int dirfd, const char *path, char *out) {
    char joined[PATH_MAX * 2];
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    if (path[0] == '/') {
        if (snprintf(joined, sizeof joined, "%s", path) >= (int)sizeof joined) {
            return 0;
        }
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (getcwd(base, sizeof base) == NULL) {
                return 0;
            }
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0) {
                return 0;
            }
            base[n] = '\0';
        }
        if (snprintf(joined, sizeof joined, "%s/%s", base, path) >= (int)sizeof joined) {
            return 0;
        }
    }
    /* cheap rejection first: most opens of a Python process are imports far from the folder */
    if (joined[0] == '/' && strncmp(joined, root, rootlen) != 0 && strstr(joined, "..") == NULL) {
        return 0;
    }
    char *slash = strrchr(joined, '/');
    char dir[PATH_MAX];
    const char *name;
    if (slash == joined) {
        snprintf(dir, sizeof dir, "/");
        name = joined + 1;
    } else {
        *slash = '\0';
        if (realpath(joined, dir) == NULL &&
            snprintf(dir, sizeof dir, "%s", joined) >= (int)sizeof dir) {
            return 0;
        }
        name = slash + 1;
    }
    int n;
    if (strcmp(name, ".") == 0 || name[0] == '\0') {
        n = snprintf(out, PATH_MAX, "%s", dir);
    } else if (strcmp(name, "..") == 0) {
        char *up = strrchr(dir, '/');
        if (up != NULL && up != dir) {
            *up = '\0';
        }
        n = snprintf(out, PATH_MAX, "%s", dir);
    } else {
        n = snprintf(out, PATH_MAX, "%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", name);
    }
    if (n >= PATH_MAX) {
        return 0;
    }
    if (!under_root(out)) {
        return 0;
    }
    if (ignore_suffix[0] != '\0' && ends_with(out, ignore_suffix)) {
        return 0;
    }
    return 1;
}

/* ---- the self-kill trigger ------------------------------------------------------------------ */

static void load_trigger(void) {
    char buf[256];
    int fd = real_open(armfile, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    real_close(fd);
    if (n <= 0) {
        return;
    }
    buf[n] = '\0';
    char op[16], suffix[64], when[16];
    long count;
    if (sscanf(buf, "%15s %63s %ld %15s", op, suffix, &count, when) != 4) {
        return;
    }
    int kind = strcmp(op, "write") == 0    ? OP_WRITE
               : strcmp(op, "sync") == 0   ? OP_SYNC
               : strcmp(op, "trunc") == 0  ? OP_TRUNC
               : strcmp(op, "rename") == 0 ? OP_RENAME
               : strcmp(op, "unlink") == 0 ? OP_UNLINK
               : strcmp(op, "any") == 0    ? OP_ANY
                                           : 0;
    if (kind == 0 || count < 1) {
        return;
    }
    trigger.op = kind;
    snprintf(trigger.suffix, sizeof trigger.suffix, "%s", strcmp(suffix, "*") == 0 ? "" : suffix);
    trigger.count = count;
    trigger.after = strcmp(when, "after") == 0;
    trigger.active = 1;
}

/* called with the lock held, before (after=0) and after (after=1) each tracked call */
static void maybe_die(int op, const char *path, int after) {
    if (rearm) {
        rearm = 0;
        load_trigger();
    }
    if (!trigger.active || trigger.after != after) {
        return;
    }
    if (trigger.op != OP_ANY && trigger.op != op) {
        return;
    }
    if (trigger.suffix[0] != '\0' && (path == NULL || !ends_with(path, trigger.suffix))) {
        return;
    }
    if (--trigger.count <= 0) {
        kill(getpid(), SIGKILL);
        for (;;) {
            pause();
        }
    }
}

/* ---- fd bookkeeping ------------------------------------------------------------------------- */

static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAXFD) {
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    free(fds[fd].path);
    fds[fd].path = strdup(path);
    fds[fd].dev = st.st_dev;
    fds[fd].ino = st.st_ino;
    fds[fd].isdir = S_ISDIR(st.st_mode);
    is_tracked[fd] = 1;
}

static void untrack(int fd) {
    if (fd < 0 || fd >= MAXFD || !is_tracked[fd]) {
        return;
    }
    is_tracked[fd] = 0;
    free(fds[fd].path);
    fds[fd].path = NULL;
}

static int tracked(int fd) { return enabled && fd >= 0 && fd < MAXFD && is_tracked[fd]; }

/* Called with the lock held: whether fd still refers to the file it was opened on. An fd closed
 * behind the shim's back (dup2 onto it, close_range) and reused for something else is forgotten. */
static int still_tracked(int fd) {
    struct stat st;
    if (!tracked(fd)) {
        return 0;
    }
    if (fstat(fd, &st) == 0 && st.st_dev == fds[fd].dev && st.st_ino == fds[fd].ino) {
        return 1;
    }
    untrack(fd);
    return 0;
}

/* reads [off, off+len) of the file behind fd, even when fd is open for writing only */
static char *read_range(int fd, off_t off, size_t len) {
    char *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        die("malloc");
    }
    int rfd = fd;
    int own = 0;
    size_t got = 0;
    while (got < len) {
        ssize_t n = real_pread(rfd, buf + got, len - got, off + (off_t)got);
        if (n < 0 && errno == EBADF && !own) {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            rfd = real_open(link, O_RDONLY | O_CLOEXEC);
            if (rfd < 0) {
                die("reopen for reading");
            }
            own = 1;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            memset(buf + got, 0, len - got);
            break;
        }
        got += (size_t)n;
    }
    if (own) {
        real_close(rfd);
    }
    return buf;
}

/* the undo record of a write of len bytes at off (off < 0: at the file position) */
static void record_write(int fd, off_t off, size_t len) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    if (off < 0) {
        int flags = fcntl(fd, F_GETFL);
        off = (flags >= 0 && (flags & O_APPEND)) ? st.st_size : lseek(fd, 0, SEEK_CUR);
        if (off < 0) {
            return;
        }
    }
    off_t old_size = st.st_size;
    size_t keep = 0;
    if (off < old_size) {
        keep = (size_t)((off_t)len < old_size - off ? (off_t)len : old_size - off);
    }
    char *old = read_range(fd, off, keep);
    append(REC_WRITE, fds[fd].path, NULL, st.st_dev, st.st_ino, off, old_size, (int64_t)len, old,
           keep);
    free(old);
}

static void record_trunc_fd(int fd, off_t length) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    size_t cut = st.st_size > length ? (size_t)(st.st_size - length) : 0;
    char *old = read_range(fd, length, cut);
    append(REC_TRUNC, fds[fd].path, NULL, st.st_dev, st.st_ino, length, st.st_size, 0, old, cut);
    free(old);
}

/* ---- open ------------------------------------------------------------------------------------ */

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int use64) {
    ensure();
    char rp[PATH_MAX];
    if (!enabled || !resolve(dirfd, path, rp)) {
        if (dirfd == AT_FDCWD) {
            return use64 ? real_open64(path, flags, mode) : real_open(path, flags, mode);
        }
        return use64 ? real_openat64(dirfd, path, flags, mode) : real_openat(dirfd, path, flags, mode);
    }
    pthread_mutex_lock(&lock);
    struct stat st;
    int existed = lstat(rp, &st) == 0;
    int writable = (flags & O_ACCMODE) != O_RDONLY;
    if (existed && (flags & O_TRUNC) && writable && S_ISREG(st.st_mode) && st.st_size > 0) {
        /* the bytes O_TRUNC is about to drop */
        int rfd = real_open(rp, O_RDONLY | O_CLOEXEC);
        if (rfd >= 0) {
            char *old = read_range(rfd, 0, (size_t)st.st_size);
            real_close(rfd);
            append(REC_TRUNC, rp, NULL, st.st_dev, st.st_ino, 0, st.st_size, 0, old,
                   (size_t)st.st_size);
            free(old);
        }
    }
    if (!existed && (flags & O_CREAT)) {
        append(REC_CREATE, rp, NULL, 0, 0, 0, 0, 0, NULL, 0);
    }
    int fd = dirfd == AT_FDCWD
                 ? (use64 ? real_open64(path, flags, mode) : real_open(path, flags, mode))
                 : (use64 ? real_openat64(dirfd, path, flags, mode)
                          : real_openat(dirfd, path, flags, mode));
    if (fd >= 0) {
        track(fd, rp);
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    if (flags & (O_CREAT | __O_TMPFILE)) {
        return (mode_t)va_arg(ap, int);
    }
    return 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode, 0);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode, 1);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, mode, 0);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, mode, 1);
}

/* the _FORTIFY_SOURCE entry points (no mode argument) */
int __open_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0, 0); }
int __open64_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0, 1); }
int __openat_2(int dirfd, const char *path, int flags) { return do_open(dirfd, path, flags, 0, 0); }
int __openat64_2(int dirfd, const char *path, int flags) {
    return do_open(dirfd, path, flags, 0, 1);
}

int creat(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0);
}

int creat64(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 1);
}

/* ---- writes ---------------------------------------------------------------------------------- */

static size_t iov_len(const struct iovec *iov, int cnt) {
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        total += iov[i].iov_len;
    }
    return total;
}

#define WRITE_BODY(fd, off, len, call)                      \
    do {                                                    \
        ensure();                                           \
        if (!tracked(fd)) {                                 \
            return call;                                    \
        }                                                   \
        pthread_mutex_lock(&lock);                          \
        if (!still_tracked(fd)) {                           \
            pthread_mutex_unlock(&lock);                    \
            return call;                                    \
        }                                                   \
        maybe_die(OP_WRITE, fds[fd].path, 0);               \
        record_write(fd, off, len);                         \
        ssize_t ret_ = call;                                \
        int err_ = errno;                                   \
        maybe_die(OP_WRITE, fds[fd].path, 1);               \
        pthread_mutex_unlock(&lock);                        \
        errno = err_;                                       \
        return ret_;                                        \
    } while (0)

ssize_t write(int fd, const void *buf, size_t len) {
    WRITE_BODY(fd, -1, len, real_write(fd, buf, len));
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    WRITE_BODY(fd, off, len, real_pwrite(fd, buf, len, off));
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    WRITE_BODY(fd, off, len, real_pwrite64(fd, buf, len, off));
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    WRITE_BODY(fd, -1, iov_len(iov, cnt), real_writev(fd, iov, cnt));
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    WRITE_BODY(fd, off, iov_len(iov, cnt), real_pwritev(fd, iov, cnt, off));
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    WRITE_BODY(fd, off, iov_len(iov, cnt), real_pwritev64(fd, iov, cnt, off));
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    WRITE_BODY(fd, off, iov_len(iov, cnt), real_pwritev2(fd, iov, cnt, off, flags));
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    WRITE_BODY(fd, off, iov_len(iov, cnt), real_pwritev64v2(fd, iov, cnt, off, flags));
}

static int do_ftruncate(int fd, off_t length, int use64) {
    ensure();
    if (!tracked(fd)) {
        return use64 ? real_ftruncate64(fd, length) : real_ftruncate(fd, length);
    }
    pthread_mutex_lock(&lock);
    if (!still_tracked(fd)) {
        pthread_mutex_unlock(&lock);
        return use64 ? real_ftruncate64(fd, length) : real_ftruncate(fd, length);
    }
    maybe_die(OP_TRUNC, fds[fd].path, 0);
    record_trunc_fd(fd, length);
    int ret = use64 ? real_ftruncate64(fd, length) : real_ftruncate(fd, length);
    int err = errno;
    maybe_die(OP_TRUNC, fds[fd].path, 1);
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}

int ftruncate(int fd, off_t length) { return do_ftruncate(fd, length, 0); }
int ftruncate64(int fd, off_t length) { return do_ftruncate(fd, length, 1); }

static int do_truncate(const char *path, off_t length, int use64) {
    ensure();
    char rp[PATH_MAX];
    if (!enabled || !resolve(AT_FDCWD, path, rp)) {
        return use64 ? real_truncate64(path, length) : real_truncate(path, length);
    }
    pthread_mutex_lock(&lock);
    maybe_die(OP_TRUNC, rp, 0);
    int rfd = real_open(rp, O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
        struct stat st;
        if (fstat(rfd, &st) == 0) {
            size_t cut = st.st_size > length ? (size_t)(st.st_size - length) : 0;
            char *old = read_range(rfd, length, cut);
            append(REC_TRUNC, rp, NULL, st.st_dev, st.st_ino, length, st.st_size, 0, old, cut);
            free(old);
        }
        real_close(rfd);
    }
    int ret = use64 ? real_truncate64(path, length) : real_truncate(path, length);
    int err = errno;
    maybe_die(OP_TRUNC, rp, 1);
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}

int truncate(const char *path, off_t length) { return do_truncate(path, length, 0); }
int truncate64(const char *path, off_t length) { return do_truncate(path, length, 1); }

/* ---- durability ------------------------------------------------------------------------------ */

static int do_sync(int fd, int data_only) {
    ensure();
    if (!tracked(fd)) {
        return data_only ? real_fdatasync(fd) : real_fsync(fd);
    }
    pthread_mutex_lock(&lock);
    if (!still_tracked(fd)) {
        pthread_mutex_unlock(&lock);
        return data_only ? real_fdatasync(fd) : real_fsync(fd);
    }
    maybe_die(OP_SYNC, fds[fd].path, 0);
    int64_t before = records;
    pthread_mutex_unlock(&lock);
    /* not under the lock: a sync can take long, and writes of other threads go on meanwhile */
    int ret = data_only ? real_fdatasync(fd) : real_fsync(fd);
    int err = errno;
    pthread_mutex_lock(&lock);
    if (ret == 0 && tracked(fd)) {
        /* what was recorded before the sync began is durable (c); a record appended while it ran
         * (another thread) may or may not have been written back, so it is not counted */
        append(REC_SYNC, fds[fd].path, NULL, fds[fd].dev, fds[fd].ino, fds[fd].isdir, data_only,
               before, NULL, 0);
    }
    maybe_die(OP_SYNC, tracked(fd) ? fds[fd].path : NULL, 1);
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}

int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

int close(int fd) {
    ensure();
    if (tracked(fd)) {
        pthread_mutex_lock(&lock);
        untrack(fd);
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

/* ---- the namespace --------------------------------------------------------------------------- */

/* a hard link to path in the keep folder (so its removal can be undone); "" when none */
static void keep_copy(const char *path, char *out) {
    out[0] = '\0';
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        return;
    }
    if (snprintf(out, PATH_MAX, "%s/%d-%lu", keepdir, (int)getpid(), ++keep_counter) >= PATH_MAX ||
        link(path, out) != 0) {
        fprintf(stderr, "powercut: cannot keep %s as %s: %s\n", path, out, strerror(errno));
        abort();
    }
}

static int do_rename(int olddir, const char *oldpath, int newdir, const char *newpath,
                     unsigned int flags, int which) {
    ensure();
    char src[PATH_MAX], dst[PATH_MAX];
    int t_src = enabled && resolve(olddir, oldpath, src);
    int t_dst = enabled && resolve(newdir, newpath, dst);
    if (!t_src && !t_dst) {
        if (which == 0) {
            return real_rename(oldpath, newpath);
        }
        if (which == 1) {
            return real_renameat(olddir, oldpath, newdir, newpath);
        }
        return real_renameat2(olddir, oldpath, newdir, newpath, flags);
    }
    pthread_mutex_lock(&lock);
    maybe_die(OP_RENAME, dst, 0);
    struct stat st;
    memset(&st, 0, sizeof st);
    lstat(src, &st);
    char backup[PATH_MAX];
    keep_copy(dst, backup);
    append(REC_RENAME, src, dst, st.st_dev, st.st_ino, 0, 0, 0, backup, strlen(backup));
    int ret = which == 0   ? real_rename(oldpath, newpath)
              : which == 1 ? real_renameat(olddir, oldpath, newdir, newpath)
                           : real_renameat2(olddir, oldpath, newdir, newpath, flags);
    int err = errno;
    maybe_die(OP_RENAME, dst, 1);
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}

int rename(const char *oldpath, const char *newpath) {
    return do_rename(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0, 0);
}

int renameat(int olddir, const char *oldpath, int newdir, const char *newpath) {
    return do_rename(olddir, oldpath, newdir, newpath, 0, 1);
}

int renameat2(int olddir, const char *oldpath, int newdir, const char *newpath,
              unsigned int flags) {
    return do_rename(olddir, oldpath, newdir, newpath, flags, 2);
}

static int do_unlink(int dirfd, const char *path, int flags, int which) {
    ensure();
    char rp[PATH_MAX];
    if (!enabled || (flags & AT_REMOVEDIR) || !resolve(dirfd, path, rp)) {
        return which == 0 ? real_unlink(path) : real_unlinkat(dirfd, path, flags);
    }
    pthread_mutex_lock(&lock);
    maybe_die(OP_UNLINK, rp, 0);
    struct stat st;
    memset(&st, 0, sizeof st);
    lstat(rp, &st);
    char backup[PATH_MAX];
    keep_copy(rp, backup);
    append(REC_UNLINK, rp, NULL, st.st_dev, st.st_ino, 0, 0, 0, backup, strlen(backup));
    int ret = which == 0 ? real_unlink(path) : real_unlinkat(dirfd, path, flags);
    int err = errno;
    maybe_die(OP_UNLINK, rp, 1);
    pthread_mutex_unlock(&lock);
    errno = err;
    return ret;
}

int unlink(const char *path) { return do_unlink(AT_FDCWD, path, 0, 0); }
int unlinkat(int dirfd, const char *path, int flags) { return do_unlink(dirfd, path, flags, 1); }
