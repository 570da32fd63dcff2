/*
 * writelog.so: an LD_PRELOAD shim that records, in call order, every write, truncate, fsync,
 * unlink and rename on files under $QRGATE_TRACE_DIR into the binary log $QRGATE_TRACE_LOG.
 *
 * tests/powercut_support.py replays the log to every flush point and rebuilds the directory as a
 * power cut would leave it if what was not fsynced is lost (the LazyFS model): each file as at
 * its last fsync, each name as at its directory's last fsync (an fsync of a directory is an 'S'
 * record on the directory's path). It is the CI stand-in for pulling the plug (RELIABILITY.md D4).
 *
 * Record: u8 op, u32 path length, path, i64 a, u32 data length, data (little endian).
 *   'W' pwrite/write   a = file offset, data = the bytes written
 *   'T' truncate       a = new size (also O_TRUNC at open, a = 0)
 *   'C' created        (O_CREAT open of a file that did not exist)
 *   'S' fsync/fdatasync
 *   'U' unlink
 *   'R' rename         path = "old\0new"
 * One mutex around each call and its record keeps the log in the order the calls took effect.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *fd_path[MAX_FD];
static char trace_dir[4096];
static size_t trace_dir_len;
static int log_fd = -1;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);
static int (*real_rename)(const char *, const char *);

static void init(void);
#define ENSURE() do { if (real_write == NULL) init(); } while (0)

__attribute__((constructor)) static void init(void) {
    if (real_write != NULL)
        return;
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_unlink = dlsym(RTLD_NEXT, "unlink");
    real_rename = dlsym(RTLD_NEXT, "rename");
    real_write = dlsym(RTLD_NEXT, "write");
    const char *dir = getenv("QRGATE_TRACE_DIR");
    const char *log = getenv("QRGATE_TRACE_LOG");
    if (dir == NULL || log == NULL || strlen(dir) >= sizeof(trace_dir) - 2)
        return;
    strcpy(trace_dir, dir);
    trace_dir_len = strlen(trace_dir);
    if (trace_dir_len > 1 && trace_dir[trace_dir_len - 1] == '/')
        trace_dir[--trace_dir_len] = '\0';
    log_fd = real_open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

static int traced(const char *path) {
    return log_fd >= 0 && path != NULL && strncmp(path, trace_dir, trace_dir_len) == 0 &&
           (path[trace_dir_len] == '/' || path[trace_dir_len] == '\0');
}

static void put_all(const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = real_write(log_fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort(); /* a lost record would make the replay lie */
        p += n;
        len -= (size_t)n;
    }
}

static void record(char op, const char *path, size_t path_len, int64_t a, const void *data, uint32_t data_len) {
    uint32_t plen = (uint32_t)path_len;
    int saved = errno;
    put_all(&op, 1);
    put_all(&plen, 4);
    put_all(path, path_len);
    put_all(&a, 8);
    put_all(&data_len, 4);
    if (data_len)
        put_all(data, data_len);
    errno = saved;
}

static void remember(int fd, const char *path, int flags, int existed) {
    if (fd < 0 || fd >= MAX_FD || !traced(path))
        return;
    free(fd_path[fd]);
    fd_path[fd] = strdup(path);
    if ((flags & O_CREAT) && !existed)
        record('C', path, strlen(path), 0, NULL, 0);
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY)
        record('T', path, strlen(path), 0, NULL, 0);
}

static const char *path_of(int fd) { return (fd >= 0 && fd < MAX_FD) ? fd_path[fd] : NULL; }

#define OPEN_BODY(call)                                             \
    mode_t mode = 0;                                                \
    if (flags & (O_CREAT | O_TMPFILE)) {                            \
        va_list ap;                                                 \
        va_start(ap, flags);                                        \
        mode = va_arg(ap, mode_t);                                  \
        va_end(ap);                                                 \
    }                                                               \
    ENSURE();                                                       \
    pthread_mutex_lock(&lock);                                      \
    struct stat st;                                                 \
    int existed = traced(path) ? stat(path, &st) == 0 : 1;          \
    int fd = call;                                                  \
    remember(fd, path, flags, existed);                             \
    pthread_mutex_unlock(&lock);                                    \
    return fd;

int open(const char *path, int flags, ...) { OPEN_BODY(real_open(path, flags, mode)) }
int open64(const char *path, int flags, ...) { OPEN_BODY(real_open64(path, flags, mode)) }
int openat(int dirfd, const char *path, int flags, ...) {
    /* only absolute paths are traced; relative ones pass through untouched */
    OPEN_BODY(real_openat(dirfd, path, flags, mode))
}
int openat64(int dirfd, const char *path, int flags, ...) { OPEN_BODY(real_openat64(dirfd, path, flags, mode)) }

int close(int fd) {
    ENSURE();
    pthread_mutex_lock(&lock);
    if (fd >= 0 && fd < MAX_FD) {
        free(fd_path[fd]);
        fd_path[fd] = NULL;
    }
    int rc = real_close(fd);
    pthread_mutex_unlock(&lock);
    return rc;
}

static ssize_t logged_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd, const void *buf, size_t n,
                             off_t off) {
    pthread_mutex_lock(&lock);
    ssize_t done = fn(fd, buf, n, off);
    const char *path = path_of(fd);
    if (done > 0 && path)
        record('W', path, strlen(path), (int64_t)off, buf, (uint32_t)done);
    pthread_mutex_unlock(&lock);
    return done;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    ENSURE();
    return logged_pwrite(real_pwrite, fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    ENSURE();
    return logged_pwrite(real_pwrite64, fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n) {
    ENSURE();
    if (fd == log_fd)
        return real_write(fd, buf, n);
    pthread_mutex_lock(&lock);
    const char *path = path_of(fd);
    off_t off = path ? lseek(fd, 0, SEEK_CUR) : 0;
    ssize_t done = real_write(fd, buf, n);
    if (done > 0 && path)
        record('W', path, strlen(path), (int64_t)off, buf, (uint32_t)done);
    pthread_mutex_unlock(&lock);
    return done;
}

static int logged_truncate(int (*fn)(int, off_t), int fd, off_t size) {
    pthread_mutex_lock(&lock);
    int rc = fn(fd, size);
    const char *path = path_of(fd);
    if (rc == 0 && path)
        record('T', path, strlen(path), (int64_t)size, NULL, 0);
    pthread_mutex_unlock(&lock);
    return rc;
}

int ftruncate(int fd, off_t size) {
    ENSURE();
    return logged_truncate(real_ftruncate, fd, size);
}
int ftruncate64(int fd, off_t size) {
    ENSURE();
    return logged_truncate(real_ftruncate64, fd, size);
}

static int logged_sync(int (*fn)(int), int fd) {
    pthread_mutex_lock(&lock);
    int rc = fn(fd);
    const char *path = path_of(fd);
    if (rc == 0 && path)
        record('S', path, strlen(path), 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    return rc;
}

int fsync(int fd) {
    ENSURE();
    return logged_sync(real_fsync, fd);
}
int fdatasync(int fd) {
    ENSURE();
    return logged_sync(real_fdatasync, fd);
}

int unlink(const char *path) {
    ENSURE();
    pthread_mutex_lock(&lock);
    int rc = real_unlink(path);
    if (rc == 0 && traced(path))
        record('U', path, strlen(path), 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    return rc;
}

int rename(const char *old_path, const char *new_path) {
    ENSURE();
    pthread_mutex_lock(&lock);
    int rc = real_rename(old_path, new_path);
    if (rc == 0 && (traced(old_path) || traced(new_path))) {
        size_t a = strlen(old_path), b = strlen(new_path);
        char *both = malloc(a + 1 + b);
        memcpy(both, old_path, a);
        both[a] = '\0';
        memcpy(both + a + 1, new_path, b);
        record('R', both, a + 1 + b, 0, NULL, 0);
        free(both);
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
