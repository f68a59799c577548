/* The same floor with io_uring: one pending recv per connection, completions
 * reaped in batches. With WAIT_NR > 1 the kernel wakes the server only once
 * WAIT_NR completions are ready or TIMEOUT_US has passed (DEFER_TASKRUN), the
 * cheapest way this kernel offers to take many lone heartbeats per wake-up.
 *
 * usage: heartbeats_uring PORT WAIT_NR TIMEOUT_US      (needs liburing) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_FD 65536
#define ACCEPT (~0ull)
static char bufs[MAX_FD][64];

static struct io_uring_sqe *sqe(struct io_uring *ring) {
    struct io_uring_sqe *s = io_uring_get_sqe(ring);
    if (!s) { io_uring_submit(ring); s = io_uring_get_sqe(ring); }
    return s;
}

static void recv_on(struct io_uring *ring, int fd) {
    struct io_uring_sqe *s = sqe(ring);
    io_uring_prep_recv(s, fd, bufs[fd], sizeof bufs[fd], 0);
    io_uring_sqe_set_data64(s, (unsigned long long)fd);
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    unsigned wait_nr = atoi(argv[2]);
    long timeout_us = atol(argv[3]);
    int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lst, (struct sockaddr *)&addr, sizeof addr) || listen(lst, 4096)) { perror("listen"); return 1; }
    struct io_uring ring;
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    params.cq_entries = 65536;
    if (io_uring_queue_init_params(4096, &ring, &params)) { perror("io_uring"); return 1; }
    struct io_uring_sqe *s = sqe(&ring);
    io_uring_prep_multishot_accept(s, lst, NULL, NULL, 0);
    io_uring_sqe_set_data64(s, ACCEPT);
    for (;;) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = timeout_us % 1000000 * 1000};
        io_uring_submit_and_wait_timeout(&ring, &cqe, wait_nr, timeout_us ? &ts : NULL, NULL);
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            if (cqe->user_data == ACCEPT) {
                if (cqe->res >= 0 && cqe->res < MAX_FD) {
                    setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    recv_on(&ring, cqe->res);
                }
            } else if (cqe->res > 0) {
                recv_on(&ring, (int)cqe->user_data);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
