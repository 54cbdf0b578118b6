// Command health_check asks kestreld whether the last backup is recent enough.
// It exits 2 when the newest snapshot of the host is older than maxAge.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"
)

const maxAge = 26 * time.Hour

type snapshot struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
}

func main() {
	req, _ := http.NewRequest("GET", "http://127.0.0.1:7420/v1/snapshots?host="+os.Args[1], nil)
	req.Header.Set("Authorization", "Bearer "+os.Getenv("KESTREL_API_TOKEN"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println("kestreld unreachable:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	var snaps []snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snaps); err != nil || len(snaps) == 0 {
		fmt.Println("no snapshots")
		os.Exit(2)
	}
	if age := time.Since(snaps[0].Time); age > maxAge {
		fmt.Printf("newest snapshot %s is %s old\n", snaps[0].ID, age.Round(time.Minute))
		os.Exit(2)
	}
	fmt.Println("ok")
}
