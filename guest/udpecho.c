/* The test guest's UDP echo (RFC 862: port 7, as nc gives the TCP one): each datagram goes back to
 * where it came from, whole. Busybox has no UDP server to do it, so guest/build.sh compiles this
 * into the initramfs. No libc: a static glibc program would add 700 KB to a guest whose every page is
 * its QEMU's on the node, and under TCG a smaller program is translated sooner. x86_64 Linux only. */

enum { SYS_SENDTO = 44, SYS_RECVFROM = 45, SYS_SOCKET = 41, SYS_BIND = 49, SYS_EXIT = 60 };
enum { AF_INET = 2, SOCK_DGRAM = 2, ECHO_PORT = 7 };

struct sockaddr_in4 {
    unsigned short family;
    unsigned short port; /* network byte order */
    unsigned int addr;
    unsigned char zero[8];
};

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static char buf[65536]; /* the largest UDP payload fits */

__attribute__((noreturn, force_align_arg_pointer)) void _start(void) {
    struct sockaddr_in4 me = {AF_INET, (ECHO_PORT >> 8) | ((ECHO_PORT & 0xff) << 8), 0, {0}};
    long fd = sys6(SYS_SOCKET, AF_INET, SOCK_DGRAM, 0, 0, 0, 0);
    if (fd < 0 || sys6(SYS_BIND, fd, (long)&me, sizeof me, 0, 0, 0) < 0)
        sys6(SYS_EXIT, 1, 0, 0, 0, 0, 0);
    for (;;) {
        struct sockaddr_in4 peer;
        unsigned int len = sizeof peer;
        long n = sys6(SYS_RECVFROM, fd, (long)buf, sizeof buf, 0, (long)&peer, (long)&len);
        if (n >= 0)
            sys6(SYS_SENDTO, fd, (long)buf, n, 0, (long)&peer, len);
    }
}
