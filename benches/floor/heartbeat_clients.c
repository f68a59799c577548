/* N client connections (source addresses 127.0.0.2 and up, 5,000 each, so
 * that ephemeral ports never run out), then RATE 4-byte heartbeats per second
 * over them in turn, sent every millisecond, for SECONDS.
 *
 * usage: heartbeat_clients PORT N RATE SECONDS */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    int port = atoi(argv[1]), n = atoi(argv[2]), rate = atoi(argv[3]), seconds = atoi(argv[4]);
    int *fds = malloc(n * sizeof *fds);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002 + i / 5000)};
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fds[i], (struct sockaddr *)&src, sizeof src) || connect(fds[i], (struct sockaddr *)&dst, sizeof dst)) {
            perror("connect");
            return 1;
        }
    }
    const char heartbeat[4] = {0, 2, 3, 0};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long sent = 0, next = 0;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
        if (elapsed > seconds) break;
        for (long due = (long)(elapsed * rate); sent < due; sent++, next = (next + 1) % n)
            send(fds[next], heartbeat, sizeof heartbeat, 0);
        usleep(1000);
    }
    return 0;
}
