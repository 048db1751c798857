# packaging/CPackConfig.cmake - the Debian packages, built with CPack's DEB generator.
#
#   cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=RelWithDebInfo \
#         -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_SYSCONFDIR=/etc
#   cmake --build build-deb -j && (cd build-deb && cpack -G DEB)
#
# (packaging/ci-package.sh does that, then lints, installs and tests the result.)
#
# Two packages, one per install() COMPONENT of CMakeLists.txt:
#   worker -> steller-worker       the daemon, stellerctl, the config (a conffile), schema,
#                                  templates, the systemd unit, man pages; a postinst that
#                                  creates the system user `steller`
#   dev    -> libstellerjobs-dev   headers, static and shared libstellerjobs, steller-jobs.pc
# An install() rule without a COMPONENT lands in neither: ci-package.sh fails on that.
#
# The version is project(VERSION) of CMakeLists.txt. Depends come from the shared
# libraries the binaries actually link (dpkg-shlibdeps), plus what the maintainer
# scripts and the pkg-config file need.
#
# Included at the end of CMakeLists.txt, so every install rule and target is known.

set(STELLER_PKG_SRC ${CMAKE_CURRENT_LIST_DIR})
set(STELLER_PKG_OUT ${CMAKE_BINARY_DIR}/packaging)
set(STELLER_MAINTAINER "Steller Platform Team <platform@steller.dev>"
    CACHE STRING "Maintainer field of the Debian packages")
file(MAKE_DIRECTORY ${STELLER_PKG_OUT})

# ---- files only the packages need ----

# The unit names /usr/bin and /etc; rewrite them for the configured layout (a no-op
# for the package's /usr + /etc).
file(READ ${STELLER_PKG_SRC}/steller-worker.service STELLER_UNIT)
string(REPLACE "/usr/bin/" "${CMAKE_INSTALL_FULL_BINDIR}/" STELLER_UNIT "${STELLER_UNIT}")
string(REPLACE "/etc/steller-worker/" "${CMAKE_INSTALL_FULL_SYSCONFDIR}/steller-worker/"
       STELLER_UNIT "${STELLER_UNIT}")
file(CONFIGURE OUTPUT ${STELLER_PKG_OUT}/steller-worker.service CONTENT "${STELLER_UNIT}" @ONLY)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${STELLER_PKG_SRC}/steller-worker.service)
install(FILES ${STELLER_PKG_OUT}/steller-worker.service
        DESTINATION lib/systemd/system COMPONENT worker)

# Man pages and changelogs are installed gzip'd (-n: no name or time, reproducible).
set(STELLER_GZ_OUTPUTS)
function(steller_gzip src out)
  add_custom_command(OUTPUT ${out} COMMAND gzip -9nc ${src} > ${out} DEPENDS ${src} VERBATIM)
  set(STELLER_GZ_OUTPUTS ${STELLER_GZ_OUTPUTS} ${out} PARENT_SCOPE)
endfunction()
steller_gzip(${STELLER_PKG_SRC}/man/steller-worker.8 ${STELLER_PKG_OUT}/steller-worker.8.gz)
steller_gzip(${STELLER_PKG_SRC}/man/stellerctl.1 ${STELLER_PKG_OUT}/stellerctl.1.gz)
install(FILES ${STELLER_PKG_OUT}/steller-worker.8.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT worker)
install(FILES ${STELLER_PKG_OUT}/stellerctl.1.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT worker)

# A native package's changelog, in Debian's format, made from the version; the date
# follows SOURCE_DATE_EPOCH when it is set.
string(TIMESTAMP STELLER_PKG_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
foreach(pkg steller-worker libstellerjobs-dev)
  file(WRITE ${STELLER_PKG_OUT}/${pkg}.changelog
       "${pkg} (${PROJECT_VERSION}) stable; urgency=medium\n\n"
       "  * Release ${PROJECT_VERSION}; the changes are in the source tree's git history.\n\n"
       " -- ${STELLER_MAINTAINER}  ${STELLER_PKG_DATE}\n")
  steller_gzip(${STELLER_PKG_OUT}/${pkg}.changelog ${STELLER_PKG_OUT}/${pkg}/changelog.gz)
endforeach()
file(MAKE_DIRECTORY ${STELLER_PKG_OUT}/steller-worker ${STELLER_PKG_OUT}/libstellerjobs-dev)
add_custom_target(steller-package-files ALL DEPENDS ${STELLER_GZ_OUTPUTS})

set(STELLER_DOC ${CMAKE_INSTALL_DATADIR}/doc)
install(FILES ${STELLER_PKG_SRC}/copyright ${STELLER_PKG_OUT}/steller-worker/changelog.gz
        DESTINATION ${STELLER_DOC}/steller-worker COMPONENT worker)
install(FILES ${STELLER_PKG_SRC}/steller-worker.default
        DESTINATION ${STELLER_DOC}/steller-worker/examples COMPONENT worker)
install(FILES ${STELLER_PKG_SRC}/copyright ${STELLER_PKG_OUT}/libstellerjobs-dev/changelog.gz
        DESTINATION ${STELLER_DOC}/libstellerjobs-dev COMPONENT dev)
# Lintian findings the project accepts, each with its reason (see the file).
install(FILES ${STELLER_PKG_SRC}/libstellerjobs-dev/lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME libstellerjobs-dev
        COMPONENT dev)

# dpkg keeps an admin's edits of a conffile across upgrades.
file(WRITE ${STELLER_PKG_OUT}/conffiles
     "${CMAKE_INSTALL_FULL_SYSCONFDIR}/steller-worker/steller-worker.conf\n")

# ---- CPack ----

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME steller-worker)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${STELLER_MAINTAINER}")
set(CPACK_PACKAGE_VENDOR Steller)
# The config goes to /etc, outside the prefix: stage under DESTDIR so that it lands
# in the package, never on the build machine.
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL worker dev)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_WORKER_PACKAGE_NAME steller-worker)
set(CPACK_DEBIAN_WORKER_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_WORKER_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_WORKER_PACKAGE_SUGGESTS "redis-server")
set(CPACK_DEBIAN_WORKER_PACKAGE_CONTROL_EXTRA
    ${STELLER_PKG_OUT}/conffiles ${STELLER_PKG_SRC}/steller-worker/postinst
    ${STELLER_PKG_SRC}/steller-worker/prerm ${STELLER_PKG_SRC}/steller-worker/postrm)
set(CPACK_COMPONENT_WORKER_DESCRIPTION
    "background job worker for the Steller API
steller-worker runs the jobs the Steller API pushes to Redis: request logs,
emails, re-engagement sweeps and sandbox wallet credits, with retries,
backoff and a dead-letter list. A master process supervises one worker
process per CPU; each runs many jobs at once on one event loop.
.
This package holds the daemon, its systemd unit, the stellerctl operations
tool, the default configuration, the SQL migrations and email templates.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libstellerjobs-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# steller-jobs.pc lists them in Requires.private, which pkg-config --cflags reads.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libhiredis-dev, libmsgpack-dev, libjansson-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_CONTROL_EXTRA ${STELLER_PKG_SRC}/libstellerjobs-dev/triggers)
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "C producer library for steller-worker jobs
libstellerjobs builds steller-worker job envelopes and pushes them to Redis:
enqueue now, schedule for later, or push many jobs in a few round trips.
.
This package holds the headers, the static and shared libraries and the
pkg-config file (steller-jobs).")

include(CPack)
