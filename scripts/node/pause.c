/* The pod sandbox ("pause") process for the local real node.
 *
 * Why this exists: kubelet + containerd need a sandbox image to hold each pod's namespaces, and
 * no registry is reachable here, so it is compiled locally (gcc -static) and packed into an
 * OCI image by scripts/build-node. Like the upstream pause: sleep until SIGINT/SIGTERM, reap
 * orphaned children (it is PID 1 of the pod when the PID namespace is shared).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
    printf("remedy-pause\n");
    return 0;
  }
  if (getpid() != 1) fprintf(stderr, "pause: not running as PID 1\n");
  struct sigaction stop = {.sa_handler = on_stop};
  struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
