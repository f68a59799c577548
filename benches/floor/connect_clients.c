/* N connections made by THREADS threads at once (64, as the load generator
 * keeps 64 handshakes in flight): connect, a 40-byte request, wait for the
 * reply, keep the connection. Prints "done" once all are made, then holds
 * them for 10 s so that the server's CPU can be read before any close.
 *
 * usage: connect_clients PORT N THREADS */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int port, n, threads;

static void *connect_some(void *arg) {
    char request[40] = {0}, reply[64];
    for (int i = (int)(long)arg; i < n; i += threads) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002 + i / 5000)};
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fd, (struct sockaddr *)&src, sizeof src) || connect(fd, (struct sockaddr *)&dst, sizeof dst)) {
            perror("connect");
            exit(1);
        }
        send(fd, request, sizeof request, 0);
        recv(fd, reply, sizeof reply, 0);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    port = atoi(argv[1]), n = atoi(argv[2]), threads = atoi(argv[3]);
    pthread_t *ids = malloc(threads * sizeof *ids);
    for (long i = 0; i < threads; i++) pthread_create(&ids[i], NULL, connect_some, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    printf("done\n");
    fflush(stdout);
    sleep(10);
    return 0;
}
