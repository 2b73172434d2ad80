// Package configs holds finproxy's scenario presets. They are plain TOML files in this
// directory, commented so that each teaches its scenario, and are also embedded in the
// binary so that `finproxy run -c lost-fin` works wherever finproxy is installed.
package configs
