/* What the epoll floors share: the listener on 127.0.0.1:PORT and the
 * accept of every pending connection into the epoll set. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* A non-blocking listener on 127.0.0.1:port, in a new epoll set; exits on failure. */
static int listen_on(const char *port, int *ep) {
    int one = 1, lst = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(port)),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lst, (struct sockaddr *)&addr, sizeof addr) || listen(lst, 4096)) { perror("listen"); exit(1); }
    *ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lst};
    epoll_ctl(*ep, EPOLL_CTL_ADD, lst, &ev);
    return lst;
}

/* Accepts every pending connection (TCP_NODELAY, as heartline sets) into `ep`. */
static void accept_all(int lst, int ep) {
    int one = 1;
    for (int s; (s = accept4(lst, NULL, NULL, SOCK_NONBLOCK)) >= 0;) {
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event conn = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &conn);
    }
}
