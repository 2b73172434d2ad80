// Package junit writes JUnit XML files, the test report CI systems read: one suite of
// cases, each passed or failed, with what it printed.
package junit
