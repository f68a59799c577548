/* The floor under heartline's idle figure: an epoll server that accepts
 * every connection and reads 4-byte heartbeats, with nothing else to do (no
 * protocol, no state, no runtime). What it costs per heartbeat is what this
 * machine charges for the wake-up, epoll and recv alone.
 *
 * usage: heartbeats_epoll PORT [SLEEP_US]
 * SLEEP_US > 0 sleeps after each batch, so that heartbeats arriving in the
 * meantime are taken in one epoll_wait (coalescing, at that much latency). */
#include "floor.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int sleep_us = argc > 2 ? atoi(argv[2]) : 0, ep;
    int lst = listen_on(argv[1], &ep);
    struct epoll_event ready[1024];
    static char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, ready, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = ready[i].data.fd;
            if (fd == lst) {
                accept_all(lst, ep);
            } else if (recv(fd, buf, sizeof buf, 0) <= 0) {
                close(fd);
            }
        }
        if (sleep_us) usleep(sleep_us);
    }
}
