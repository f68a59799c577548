/* The floor under heartline's connect figure: an epoll server that accepts,
 * reads one request and writes one 24-byte reply (as HELLO → WELCOME), with
 * no protocol, token check or session behind it.
 *
 * usage: connect_epoll PORT */
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
    int one = 1, lst = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lst, (struct sockaddr *)&addr, sizeof addr) || listen(lst, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lst}, ready[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev);
    static char buf[16384], reply[24];
    for (;;) {
        int n = epoll_wait(ep, ready, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = ready[i].data.fd;
            if (fd == lst) {
                for (int s; (s = accept4(lst, NULL, NULL, SOCK_NONBLOCK)) >= 0;) {
                    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event conn = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
                    epoll_ctl(ep, EPOLL_CTL_ADD, s, &conn);
                }
            } else if (recv(fd, buf, sizeof buf, 0) > 0) {
                send(fd, reply, sizeof reply, 0);
            } else {
                close(fd);
            }
        }
    }
}
