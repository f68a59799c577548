/* The floor under heartline's per-connection CPU figures: an epoll server
 * with no protocol, no state and no runtime. It accepts every connection and
 * reads what arrives; with REPLY_BYTES > 0 it answers each read with that
 * many bytes (a request → reply, as HELLO → WELCOME). What it costs is what
 * this machine charges for the wake-up, epoll, recv and send alone.
 *
 * usage: epoll PORT [REPLY_BYTES] [SLEEP_US]
 * SLEEP_US > 0 sleeps after each batch, so that what arrives in the meantime
 * is taken in one epoll_wait (coalescing, at that much latency). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int reply_bytes = argc > 2 ? atoi(argv[2]) : 0, sleep_us = argc > 3 ? atoi(argv[3]) : 0, one = 1;
    static char buf[16384], reply[256];
    if (reply_bytes < 0 || reply_bytes > (int)sizeof reply) return 2;
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lst, (struct sockaddr *)&addr, sizeof addr) || listen(lst, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lst}, ready[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev);
    for (;;) {
        int n = epoll_wait(ep, ready, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = ready[i].data.fd;
            if (fd == lst) {
                /* TCP_NODELAY, as heartline sets it. */
                for (int s; (s = accept4(lst, NULL, NULL, SOCK_NONBLOCK)) >= 0;) {
                    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event conn = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
                    epoll_ctl(ep, EPOLL_CTL_ADD, s, &conn);
                }
            } else if (recv(fd, buf, sizeof buf, 0) <= 0) {
                close(fd);
            } else if (reply_bytes) {
                send(fd, reply, reply_bytes, 0);
            }
        }
        if (sleep_us) usleep(sleep_us);
    }
}
