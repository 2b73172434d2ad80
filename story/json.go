package story

import (
	"encoding/json"
	"io"
)

// WriteJSON writes the story as one JSON document (see Story.MarshalJSON).
func WriteJSON(w io.Writer, s Story) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
