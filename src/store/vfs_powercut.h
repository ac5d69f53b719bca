/* Power-cut simulation VFS (test builds only, -Dtest_vfs=true): writes reach the files on sync. */
#ifndef TS_VFS_POWERCUT_H
#define TS_VFS_POWERCUT_H

/* With TESSERA_TEST_VFS=powercut in the environment, registers the "powercut" VFS as SQLite's
 * default (once per process; later calls return the first answer). Every write to a database,
 * WAL or journal file is held in this process's memory until an xSync of that file copies it
 * to the real file, so a kill -9 loses exactly the writes no sync has covered, as a power cut
 * would. 0 when registered or the variable is unset; negative for an unknown value or failure. */
int vfs_powercut_install(void);

#endif
