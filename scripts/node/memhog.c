/* The workload of the real-node tests: hold N MiB of touched memory, or exit with a code.
 *
 * Why this exists: the OOM scenario needs a container that really exceeds its memory limit
 * so the kernel kills it (and that fits once the limit is raised), and the rollout scenarios
 * need a process that runs (or a "bad release" that exits). A static binary keeps the image
 * tiny and its build (gcc -static, scripts/build-node) a second long.
 *
 *   memhog MIB        allocate and touch MIB MiB in 4 MiB steps, print "holding MIB MiB",
 *                     then sleep until SIGTERM
 *   memhog MIB --spike-once SPIKE MARKER
 *                     on the first start (MARKER missing: create it) hold SPIKE MiB instead;
 *                     with MARKER on an emptyDir, a container that was OOM-killed once and
 *                     then runs within its limit (the state an in-place resize acts on)
 *   memhog --exit N   print a line and exit with status N (a release that crashes)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_stop(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc == 3 && strcmp(argv[1], "--exit") == 0) {
    printf("exiting with %s\n", argv[2]);
    return atoi(argv[2]);
  }
  long mib = argc > 1 ? atol(argv[1]) : 0;
  if (argc == 5 && strcmp(argv[2], "--spike-once") == 0) {
    FILE *marker = fopen(argv[4], "r");
    if (marker == NULL) {
      marker = fopen(argv[4], "w");
      mib = atol(argv[3]);
      printf("first start: spiking to %ld MiB\n", mib);
    }
    if (marker != NULL) fclose(marker);
  }
  signal(SIGTERM, on_stop);
  signal(SIGINT, on_stop);
  const long step = 4L << 20;
  for (long done = 0; done < mib << 20; done += step) {
    char *p = malloc(step);
    if (p == NULL) {
      printf("malloc failed after %ld MiB\n", done >> 20);
      return 3;
    }
    memset(p, 1, step);  /* touch every page: resident, charged to the memory cgroup */
  }
  printf("holding %ld MiB\n", mib);
  for (;;) pause();
}
