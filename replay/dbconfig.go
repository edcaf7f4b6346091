package replay

/*
// The SQLite library is the one github.com/mattn/go-sqlite3 compiles in; its
// symbols are visible to the final link, so only the declarations are needed.
typedef struct sqlite3 sqlite3;
extern int sqlite3_db_config(sqlite3 *db, int op, ...);

static int replay_db_config(void *db, int op, int value, int *out) {
	return sqlite3_db_config((sqlite3 *)db, op, value, out);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	"github.com/mattn/go-sqlite3"
)

// The sqlite3_db_config options the sandbox sets (sqlite3.h).
const (
	dbconfigEnableLoadExtension = 1005 // SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION
	dbconfigDefensive           = 1010 // SQLITE_DBCONFIG_DEFENSIVE
	dbconfigTrustedSchema       = 1017 // SQLITE_DBCONFIG_TRUSTED_SCHEMA
)

// errNoHandle means the SQLite handle could not be found inside
// go-sqlite3's connection: the driver changed and the sandbox must not open
// connections it cannot harden.
var errNoHandle = errors.New("cannot reach the SQLite handle of the go-sqlite3 connection (driver version changed?)")

// handleOf returns the sqlite3* of c. go-sqlite3 does not export it nor
// sqlite3_db_config, so the unexported field is read by reflection; a
// missing field fails closed.
func handleOf(c *sqlite3.SQLiteConn) (unsafe.Pointer, error) {
	if c == nil {
		return nil, errNoHandle
	}
	f := reflect.ValueOf(c).Elem().FieldByName("db")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		return nil, errNoHandle
	}
	return f.UnsafePointer(), nil
}

// dbConfig sets the sqlite3_db_config flag op of c to on and returns the
// value SQLite reports afterwards, so that callers can check it took.
func dbConfig(c *sqlite3.SQLiteConn, op int, on bool) (bool, error) {
	h, err := handleOf(c)
	if err != nil {
		return false, err
	}
	v := C.int(0)
	if on {
		v = 1
	}
	var out C.int
	if rc := C.replay_db_config(h, C.int(op), v, &out); rc != 0 {
		return false, fmt.Errorf("sqlite3_db_config(%d, %d): error code %d", op, v, int(rc))
	}
	return out != 0, nil
}

// dbConfigGet reads the sqlite3_db_config flag op of c without changing it.
func dbConfigGet(c *sqlite3.SQLiteConn, op int) (bool, error) {
	h, err := handleOf(c)
	if err != nil {
		return false, err
	}
	var out C.int
	if rc := C.replay_db_config(h, C.int(op), -1, &out); rc != 0 {
		return false, fmt.Errorf("sqlite3_db_config(%d, -1): error code %d", op, int(rc))
	}
	return out != 0, nil
}
