// Package units formats byte counts for people, in one way for every
// message, report and table the programs print (binary units: KiB, MiB,
// GiB, TiB).
package units

import "fmt"

// Bytes is n in binary units: "512 B", "4.0 KiB", "1.5 MiB", "2.25 GiB",
// "1.50 TiB".
func Bytes(n int64) string {
	switch {
	case n >= 1<<40:
		return fmt.Sprintf("%.2f TiB", float64(n)/(1<<40))
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
