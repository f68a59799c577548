/* The floor under heartline's connect figure: an epoll server that accepts,
 * reads one request and writes one 24-byte reply (as HELLO → WELCOME), with
 * no protocol, token check or session behind it.
 *
 * usage: connect_epoll PORT */
#include "floor.h"

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int ep, lst = listen_on(argv[1], &ep);
    struct epoll_event ready[1024];
    static char buf[16384], reply[24];
    for (;;) {
        int n = epoll_wait(ep, ready, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = ready[i].data.fd;
            if (fd == lst) {
                accept_all(lst, ep);
            } else if (recv(fd, buf, sizeof buf, 0) > 0) {
                send(fd, reply, sizeof reply, 0);
            } else {
                close(fd);
            }
        }
    }
}
